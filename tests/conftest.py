"""Fixtures every test shares: app storage in a temp dir, and a live app for browser tests.

What the suite needs from the hardware: a CPU, any (no GPU: the tests that need one are skipped
without it), and chromium at /usr/bin/chromium for the browser tests. Results must not depend on
the CPU's bf16 units (AVX-512 BF16 or AMX): expectations that depend on precision follow what
``choose_precision`` picks here, the ``no_bf16_cpu`` fixture makes a CPU with the units look as
if it had none, and bf16 asked for is tested where it is emulated. The header of a run says what
this machine is and what ``auto`` picks on it. To run the whole suite as on an AVX2-only CPU
(a 2-core AMD EPYC, say) on one with the units, workers included::

    TRANSFER_LAB_CPU_BF16=off ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python -m pytest -q

(the first is the app's own override, ``core.machine``; the other two keep torch's kernels and
oneDNN to AVX2.) Tests wait for conditions, never for fixed times, with bounds generous enough
for a busy machine: the suite passes beside two CPU-burning processes on 2 cores.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
from helpers_browser import new_tab

ROOT = Path(__file__).resolve().parents[1]
BROWSER = os.environ.get("TRANSFER_LAB_BROWSER", "/usr/bin/chromium")
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def pytest_report_header() -> list[str]:
    """The machine the results came from: its CPU, its bf16 units, and what auto picks on it."""
    import torch

    from core import machine
    from core.training.device import choose_precision

    cpu = machine.cpu()
    capability = torch.backends.cpu.get_cpu_capability()
    return [
        f"cpu: {cpu.name}, bf16 units: {'yes' if cpu.has_bf16_units else 'no'}, torch kernels: {capability}",
        f"{machine.BF16_ENV}={machine.bf16_setting()}: auto precision on the CPU is "
        + choose_precision(torch.device("cpu")),
    ]


@pytest.fixture
def no_bf16_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """This CPU as one without bf16 units (an AVX2-only AMD EPYC): ``auto`` precision is fp32,
    here and in the workers the test starts."""
    from core import machine

    monkeypatch.setenv(machine.BF16_ENV, "off")


@pytest.fixture(scope="session")
def shared_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's one backbone catalog folder (``core.models.catalog``), filled by the first
    test that reads it: computing it takes half a minute on 2 cores, and it depends only on the
    libraries and the code, which a session does not change."""
    return tmp_path_factory.mktemp("backbone_catalog")


def share_catalog(home: Path, catalog_dir: Path) -> None:
    """Let the app storage in ``home`` read and write its backbone catalog in ``catalog_dir``."""
    (home / "cache").mkdir(parents=True, exist_ok=True)
    (home / "cache" / "backbones").symlink_to(catalog_dir, target_is_directory=True)


@pytest.fixture(autouse=True)
def lab_home(tmp_path: Path, shared_catalog: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test writes app storage into its own temp dir, never the user's home; all share
    the session's backbone catalog."""
    home = tmp_path / "lab_home"
    monkeypatch.setenv("TRANSFER_LAB_HOME", str(home))
    share_catalog(home, shared_catalog)
    return home


TINY_PLAN = {
    "backbone": "efficientnet_lite0",
    "case": 1,
    "epochs": 2,
    "batch_size": 16,
    "image_size": 64,
    "augment": "none",
    "device": "cpu",
}


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny) case-1 run on the faces sample, trained once for the whole session."""
    from core import storage
    from core.data.samples import sample_path
    from core.jobs.run import Run, RunState, StatusKeeper, new_run_id
    from core.training import train
    from core.training.events import EventLog

    home = tmp_path_factory.mktemp("trained_home")
    old = os.environ.get("TRANSFER_LAB_HOME")
    os.environ["TRANSFER_LAB_HOME"] = str(home)
    try:
        run = Run(storage.runs_dir() / new_run_id())
        run.directory.mkdir(parents=True)
        storage.write_json(run.plan_file, {**TINY_PLAN, "data": str(sample_path("faces"))})
        with StatusKeeper.take(run) as keeper:
            keeper.set_state(RunState.RUNNING, pid=None, submitted=0.0, started=0.0)
            train.run(run.directory, EventLog(run.directory))
            keeper.set_state(RunState.DONE)
    finally:
        if old is None:
            os.environ.pop("TRANSFER_LAB_HOME")
        else:
            os.environ["TRANSFER_LAB_HOME"] = old
    return run.directory


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(
    url: str, process: subprocess.Popen, timeout: float = 90, path: str = "/_stcore/health"
) -> None:
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


def _stop(process: subprocess.Popen, log: IO[str]) -> None:
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


def start_app(
    home: Path,
    env: dict[str, str] | None = None,
    secrets: Callable[[str], str] | None = None,
    port: int | None = None,
) -> App:
    """Start a real Streamlit server on 127.0.0.1 (on ``port``, else a free one) with its storage
    in ``home`` and extra environment, and wait until it answers; ``secrets`` writes its
    ``secrets.toml`` from its URL. The caller stops it (``_stop``), or kills it."""
    port = port or _free_port()
    url = f"http://127.0.0.1:{port}"
    home.mkdir(parents=True, exist_ok=True)
    args = []
    if secrets is not None:
        (home / "secrets.toml").write_text(secrets(url))
        args = ["--secrets.files", str(home / "secrets.toml")]
    log = open(home / "server.log", "a")  # noqa: SIM115 - open for the server's life, closed by _stop
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
        _wait_healthy(url, process)
    except BaseException:
        _stop(process, log)
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
        _stop(app.process, app.log)


@pytest.fixture(scope="session")
def app_url(tmp_path_factory: pytest.TempPathFactory, shared_catalog: Path) -> Iterator[str]:
    """A real Streamlit server on 127.0.0.1 with its own storage, for the whole session."""
    # Workers sleep after each batch so that a tiny run lasts long enough to watch it live.
    from core.models import catalog

    home = tmp_path_factory.mktemp("browser_home")
    share_catalog(home, shared_catalog)
    with pytest.MonkeyPatch.context() as patch:  # written before the server starts, as an image build does
        patch.setenv("TRANSFER_LAB_HOME", str(home))
        catalog.cards()
    with serve_app(home, env={"TRANSFER_LAB_STEP_DELAY": "0.3"}) as url:
        yield url


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Debian's chromium driven by Playwright. Missing: a failure under CI, a skip elsewhere."""
    if not os.access(BROWSER, os.X_OK):
        message = f"no browser at {BROWSER}: run scripts/ensure-browser.sh (needs root and apt-get)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=BROWSER, args=BROWSER_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, app_url: str):
    """A tab on the shared app; its waits are bounded by ``helpers_browser.WAIT_MS``."""
    tab = new_tab(browser, accept_downloads=True)
    yield tab
    tab.context.close()


@pytest.fixture
def screenshot_dir() -> Path | None:
    """Where README screenshots go when ``TRANSFER_LAB_SCREENSHOTS`` names a folder."""
    folder = os.environ.get("TRANSFER_LAB_SCREENSHOTS")
    if not folder:
        return None
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def app_server():
    """Starts further app servers, configured differently from ``app_url``'s:
    ``with app_server(home, env={...}, secrets=lambda url: "...") as url``."""
    return serve_app


@pytest.fixture(scope="session")
def identity_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real OpenID Connect provider for tests (``oidc-provider-mock``) on 127.0.0.1: it signs
    in whoever is typed on its page, with that text as the e-mail address. Yields its issuer URL."""
    port = _free_port()
    log = open(tmp_path_factory.mktemp("identity_provider") / "provider.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "oidc_provider_mock", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, timeout=60, path="/.well-known/openid-configuration")
        yield url
    finally:
        _stop(process, log)
