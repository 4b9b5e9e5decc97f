"""The sign-in gate of a real server (``streamlit run streamlit_app.py`` on 127.0.0.1), probed
over HTTP and the app's own websocket as an attacker would: nothing is accepted before sign-in,
and the team password's throttle neither leaks guesses nor locks the team out."""

from __future__ import annotations

import contextlib
import http.cookiejar
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers_pages import PASSWORD
from helpers_server import ROOT, start_app, stop_server
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect

from core import access
from core.access import throttle as throttle_module
from core.access.throttle import FailureThrottle, SignInRefused


@pytest.fixture(scope="module")
def server_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gate_home")


@pytest.fixture(scope="module")
def app(server_home: Path) -> Iterator[str]:
    """One password-protected server for this module; its failures table is emptied per test."""
    started = start_app(server_home, env={access.PASSWORD_HASH_ENV: access.hash_password(PASSWORD)})
    try:
        yield started.url
    finally:
        stop_server(started.process, started.log)


def unlock(server_home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The admin's command, run against the server's home folder."""
    return subprocess.run(
        [sys.executable, "-m", "core", "unlock-sign-in", *args],
        check=False,
        cwd=ROOT,
        env={**os.environ, "TRANSFER_LAB_HOME": str(server_home)},
        capture_output=True,
        text=True,
    )


@pytest.fixture(autouse=True)
def unlocked(request: pytest.FixtureRequest) -> None:
    """Each server test starts with no failed sign-ins, as an admin's unlock leaves them."""
    if "app" in request.fixturenames:
        FailureThrottle(request.getfixturevalue("server_home") / "access" / "failures.json").unlock()


def request(url: str, *, data: bytes | None = None, method: str | None = None, headers=None, opener=None):
    """(status, body) of an HTTP request, errors included, redirects not followed."""
    opener = opener or urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, data, headers or {}, method=method), timeout=30) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are what the tests look at, not where they lead."""

    def redirect_request(self, *args, **kwargs):
        return None


def sign_in(app: str, name: str, password: str, headers=None) -> tuple[int, str, http.cookiejar.CookieJar]:
    """The sign-in form posted as a browser posts it: (status, page, the cookies it set)."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPCookieProcessor(jar))
    form = urllib.parse.urlencode({"name": name, "password": password, "next": "/"}).encode()
    status, page = request(f"{app}/gate/sign-in", data=form, headers=headers, opener=opener)
    return status, page, jar


def cookie_of(jar: http.cookiejar.CookieJar) -> str:
    """The sign-in cookie from a jar, as a Cookie header."""
    return next(f"{c.name}={c.value}" for c in jar if c.name == "transfer_lab_sign_in")


@contextlib.contextmanager
def websocket_session(app: str, cookie: str = "", resume: str = "") -> Iterator[str | None]:
    """A session opened on the app's websocket the way the browser's frontend opens one (or,
    with ``resume``, reopens one by its id): its id while the socket stays open, or None when
    the server refuses it."""
    socket_url = app.replace("http://", "ws://") + "/_stcore/stream"
    headers = {"Origin": app, **({"Cookie": cookie} if cookie else {})}
    protocols = ["streamlit", "no-xsrf-token", resume] if resume else ["streamlit"]
    with contextlib.ExitStack() as stack:
        try:
            socket = stack.enter_context(
                connect(socket_url, subprotocols=protocols, additional_headers=headers)
            )
            session_id = first_session_id(socket)
        except (OSError, InvalidHandshake, ConnectionClosed):
            session_id = None
        yield session_id


def first_session_id(socket) -> str:
    """Ask for a run, as the frontend does on connecting, and read the session id it announces."""
    rerun = BackMsg()
    rerun.rerun_script.query_string = ""
    socket.send(rerun.SerializeToString())
    while True:
        message = ForwardMsg.FromString(socket.recv(timeout=120))
        if message.WhichOneof("type") == "new_session":
            return message.new_session.initialize.session_id


def upload(app: str, session_id: str, megabytes: int, cookie: str = "") -> int:
    """PUT ``megabytes`` of a file to Streamlit's upload endpoint for a session, with the XSRF
    cookie and header the frontend sends; returns the final status. The body follows only once
    the server asks for it (``Expect: 100-continue``): a refusal before reading it comes at once."""
    token = "2|00000000|" + "0" * 64 + "|1"
    boundary = "gateboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.zip"\r\n'
            "Content-Type: application/zip\r\n\r\n"
        ).encode()
        + b"\0" * (megabytes << 20)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    address = urllib.parse.urlparse(app)
    head = (
        f"PUT /_stcore/upload_file/{session_id}/file1 HTTP/1.1\r\nHost: {address.netloc}\r\n"
        f"Content-Length: {len(body)}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
        f"X-Xsrftoken: {token}\r\nCookie: _streamlit_xsrf={token}; {cookie}\r\nOrigin: {app}\r\n"
        "Expect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((address.hostname, address.port), timeout=60) as connection:
        connection.sendall(head.encode())
        status = int(connection.recv(4096).split(b" ")[1])
        if status != 100:
            return status
        connection.sendall(body)
        return int(connection.recv(4096).split(b" ")[1])


# ------------------------------------------------------------------ nothing before sign-in


def test_before_sign_in_no_session_opens_no_upload_is_taken_and_metrics_are_private(app: str) -> None:
    with websocket_session(app) as session_id:
        # Today a stranger's websocket gets a session, and a file to it is held in memory (204).
        assert upload(app, session_id or "0" * 36, megabytes=8) in (401, 403)
    assert request(f"{app}/_stcore/metrics")[0] in (401, 403)
    assert request(f"{app}/_stcore/health")[0] == 200  # what a proxy's health check needs


def test_before_sign_in_every_page_address_is_the_sign_in(app: str) -> None:
    """Started as ``streamlit run streamlit_app.py``: no page of ``pages/`` runs on its own."""
    for path in ("/", "/advisor", "/backbones", "/train?run=x"):
        status, _ = request(f"{app}{path}")
        assert status == 303, path
    status, page = request(f"{app}/gate/sign-in?next=/advisor")
    assert status == 200 and "Team password" in page and "Advisor" not in page


def test_signed_in_a_session_opens_and_takes_uploads_and_a_forged_cookie_opens_none(app: str) -> None:
    status, _, jar = sign_in(app, "Bob", PASSWORD)
    assert status == 303
    [cookie] = [c for c in jar if c.name == "transfer_lab_sign_in"]
    assert cookie.has_nonstandard_attr("HttpOnly")
    with websocket_session(app, f"{cookie.name}={cookie.value}") as session_id:
        assert session_id is not None
        assert upload(app, session_id, megabytes=1, cookie=f"{cookie.name}={cookie.value}") == 204
    forged = cookie.value[:-4] + ("AAAA" if not cookie.value.endswith("AAAA") else "BBBB")
    with websocket_session(app, f"{cookie.name}={forged}") as session_id:
        assert session_id is None


def test_a_session_id_reopens_a_session_only_for_the_browser_that_signed_in(app: str) -> None:
    """The id travels in upload URLs: another signed-in person who presents it gets a session of
    their own, never the victim's (its state included)."""
    bob, eve = (cookie_of(sign_in(app, name, PASSWORD)[2]) for name in ("bob", "eve"))
    with websocket_session(app, bob) as victims:
        with websocket_session(app, eve, resume=victims) as thiefs:
            assert thiefs is not None and thiefs != victims
        with websocket_session(app, bob, resume=victims) as own:
            assert own == victims  # the victim's own browser, reconnecting, keeps its session


# ------------------------------------------------------------------ the throttle over HTTP


def test_a_forwarded_address_from_an_untrusted_peer_gets_no_fresh_budget(app: str) -> None:
    pages = [sign_in(app, "eve", f"guess {i}", {"X-Forwarded-For": f"203.0.113.{i}"})[1] for i in range(10)]
    checked = sum("wrong password" in page for page in pages)
    assert 1 <= checked <= 3, pages  # each spoofed value a fresh budget would have checked all ten


def test_a_burst_from_one_address_keeps_the_team_out_a_minute_at_most(app: str) -> None:
    pages = [sign_in(app, f"guesser {i}", f"guess {i}")[1] for i in range(12)]
    assert sum("wrong password" in page for page in pages) <= 6  # names typed at random buy nothing
    status, page, _ = sign_in(app, "ann", PASSWORD)
    assert status == 303 or ("from your address" in page and seconds_to_wait(page) <= 60), page


def test_an_admin_unlocks_a_name_at_once(app: str, server_home: Path) -> None:
    assert "wrong password" in sign_in(app, "eve", "guess")[1]
    unlocked = unlock(server_home, "Eve")
    assert unlocked.returncode == 0 and "eve: 1 failure" in unlocked.stdout
    assert sign_in(app, "eve", PASSWORD)[0] == 303


def seconds_to_wait(page: str) -> int:
    return int(page.split("try again in ")[1].split(" s")[0])


def test_failed_sign_ins_from_many_addresses_keep_a_bounded_table(tmp_path: Path) -> None:
    throttle = FailureThrottle(tmp_path / "failures.json", max_entries=20)
    for i in range(60):
        with contextlib.suppress(SignInRefused):
            throttle.attempt("eve", f"2001:db8:{i}::1", now=1000.0 + i)
    assert len(throttle.entries(now=1060.0)) <= 20
    assert throttle.entries(now=1060.0 + throttle_module.FORGET_AFTER_S + throttle_module.MAX_DELAY_S) == {}
