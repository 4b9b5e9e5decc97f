"""Real app servers for the tests that need one: a Streamlit process of the app on 127.0.0.1,
with its own storage, started and stopped by the test (or by conftest's ``app_url`` and
``app_server`` fixtures)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(
    url: str, process: subprocess.Popen, timeout: float = 90, path: str = "/_stcore/health"
) -> None:
    """Return once ``url + path`` answers 200; fail at once if ``process`` ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited early with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}{path}", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not become healthy in {timeout:.0f} s")


def stop_server(process: subprocess.Popen, log: IO[str]) -> None:
    """End a server the test started, politely and then not, and close its log."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@dataclass
class App:
    """A Streamlit server process of the app, its URL and its log."""

    process: subprocess.Popen
    url: str
    log: IO[str]


@contextlib.contextmanager
def module_server(
    module_args: list[str],
    folder: Path,
    health_path: str,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """``python -m MODULE ARGS`` on a free port of 127.0.0.1 (``{port}`` in ``module_args`` is
    replaced by it), with ``env`` added to the environment, logging to ``folder/server.log``;
    yields its URL once ``health_path`` answers, and stops it after."""
    port = free_port()
    log = open(folder / "server.log", "w")  # noqa: SIM115 - open for the server's life, closed by stop_server
    args = [arg.replace("{port}", str(port)) for arg in module_args]
    process = subprocess.Popen(
        [sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, timeout=timeout, path=health_path)
        yield url
    finally:
        stop_server(process, log)


def start_app(
    home: Path,
    env: dict[str, str] | None = None,
    secrets: Callable[[str], str] | None = None,
    port: int | None = None,
) -> App:
    """Start a real Streamlit server on 127.0.0.1 (on ``port``, else a free one) with its storage
    in ``home`` and extra environment, and wait until it answers; ``secrets`` writes its
    ``secrets.toml`` from its URL. The caller stops it (``stop_server``), or kills it."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    home.mkdir(parents=True, exist_ok=True)
    args = []
    if secrets is not None:
        (home / "secrets.toml").write_text(secrets(url))
        args = ["--secrets.files", str(home / "secrets.toml")]
    log = open(home / "server.log", "a")  # noqa: SIM115 - open for the server's life, closed by stop_server
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(ROOT / "streamlit_app.py"),
            "--server.address",
            "127.0.0.1",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            *args,
        ],
        cwd=ROOT,
        env={**os.environ, "TRANSFER_LAB_HOME": str(home), **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_healthy(url, process)
    except BaseException:
        stop_server(process, log)
        raise
    return App(process, url, log)


@contextlib.contextmanager
def serve_app(
    home: Path, env: dict[str, str] | None = None, secrets: Callable[[str], str] | None = None
) -> Iterator[str]:
    """A real Streamlit server, as ``start_app`` starts it. Yields the URL, stops it afterwards."""
    app = start_app(home, env, secrets)
    try:
        yield app.url
    finally:
        stop_server(app.process, app.log)
