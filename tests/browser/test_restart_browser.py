"""A real server killed mid-run and started again, and an upload cut off half-way: no run is
lost, and nothing half-received reaches the home folder. A browser opens a session on each
server: that is what runs the app's start-up recovery, and what holds an upload's session."""

from __future__ import annotations

import os
import signal
import socket
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest
from fixtures.data.zips import classes, make_zip
from helpers_browser import new_tab
from helpers_jobs import process_gone, wait_for_state, wait_until
from helpers_server import start_app, stop_server

from core import jobs
from core.jobs.run import Run

pytestmark = pytest.mark.browser


def test_a_server_killed_mid_run_loses_no_run(home: Path, browser, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers outlive the server: a run whose worker lives keeps going and shows after the
    restart; one whose worker died while the server was down is marked interrupted."""
    env = {"TRANSFER_LAB_MAX_RUNS": "2"}
    monkeypatch.setenv("TRANSFER_LAB_MAX_RUNS", "2")
    first = start_app(home, env)
    survivor = jobs.submit({"seconds": 12}, target="tests.helpers_jobs:sleepy", run_id="survivor")
    victim = jobs.submit({}, target="tests.helpers_jobs:forever", run_id="victim")
    wait_until(
        lambda: all(Run.open(r).status().state == "running" for r in (survivor, victim)),
        "both running",
    )
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    first.log.close()
    victim_pid = Run.open(victim).status().pid
    os.kill(victim_pid, signal.SIGKILL)  # its worker dies while no server is up
    wait_until(lambda: process_gone(victim_pid), "victim's worker gone")

    second = start_app(home, env, port=urlparse(first.url).port)
    try:
        tab = new_tab(browser)
        tab.goto(second.url)
        sidebar = tab.locator("[data-testid='stSidebar']")
        sidebar.get_by_text("· running").wait_for()  # recovered, then listed
        assert Run.open(survivor).status().state == "running"
        assert process_gone(Run.open(survivor).status().pid) is False
        interrupted = Run.open(victim).status()
        assert interrupted.state == "interrupted"
        assert interrupted.message.startswith("its worker was gone when the app started")
        assert wait_for_state(survivor, "done", timeout_s=30).message == ""
        tab.context.close()
    finally:
        stop_server(second.process, second.log)


def test_an_upload_cut_off_half_way_leaves_nothing(home: Path, browser) -> None:
    """Streamlit receives a whole file before our code sees it: half an upload, on a real
    session, is dropped by the server and never reaches the home folder."""
    app = start_app(home)
    try:
        tab = new_tab(browser)
        context = tab.context
        captured: list = []

        def hold(route) -> None:  # the browser's own upload is stopped, and told us where it went
            captured.append(route.request)
            route.abort()

        tab.route("**/_stcore/upload_file/**", hold)
        tab.goto(f"{app.url}/train?upload={'0' * 64}")  # the upload source, without a sample to check
        # Playwright runs the route handler only while it is called: here, until the upload failed.
        with tab.expect_event(
            "requestfailed", predicate=lambda failed: "/_stcore/upload_file/" in failed.url
        ):
            tab.locator("input[type='file']").set_input_files(
                files=[
                    {
                        "name": "pets.zip",
                        "mimeType": "application/zip",
                        "buffer": make_zip(classes({"a": 3, "b": 3})),
                    }
                ]
            )
        request = captured[0]
        before = sorted(str(p) for p in home.rglob("*"))

        where = (app.url, urlparse(request.url).path, request.headers, context.cookies())
        put_upload(*where, cut_off=True)
        # The same upload whole is taken (the route, session and token were right), and kept in
        # Streamlit's memory: our code sees a file only once the page reruns with it.
        assert put_upload(*where, cut_off=False).split()[1] in ("200", "204")

        with urllib.request.urlopen(f"{app.url}/_stcore/health") as health:
            assert health.status == 200  # the server took no harm: what a reverse proxy checks
        assert sorted(str(p) for p in home.rglob("*")) == before
        assert not (home / "uploads").exists() and not (home / "datasets").exists()
        context.close()
    finally:
        stop_server(app.process, app.log)


def put_upload(url: str, path: str, headers: dict[str, str], cookies: list[dict], *, cut_off: bool) -> str:
    """PUT a multipart upload of a zip to Streamlit's upload endpoint as the browser would, with
    its session's cookie and XSRF token; ``cut_off``: hang up after half of it. Returns the
    response's status line ('' when cut off)."""
    boundary = "faultsboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="pets.zip"\r\n'
            "Content-Type: application/zip\r\n\r\n"
        ).encode()
        + make_zip(classes({"a": 30, "b": 30}))
        + f"\r\n--{boundary}--\r\n".encode()
    )
    cookie = "; ".join(f"{c['name']}={c['value']}" for c in cookies)
    head = (
        f"PUT {path} HTTP/1.1\r\nHost: {urlparse(url).netloc}\r\nContent-Length: {len(body)}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nCookie: {cookie}\r\n"
        f"X-Xsrftoken: {headers.get('x-xsrftoken', '')}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((urlparse(url).hostname, urlparse(url).port), timeout=10) as connection:
        if cut_off:
            connection.sendall(head.encode() + body[: len(body) // 2])
            return ""
        connection.sendall(head.encode() + body)
        return connection.recv(4096).decode(errors="replace").split("\r\n")[0]
