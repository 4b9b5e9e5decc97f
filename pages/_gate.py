"""The web server's half of the sign-in: what the server accepts, request by request, before and
after someone has signed in. ``streamlit_app.py`` puts it in front of Streamlit's own routes.

The shell (``pages/_access.py``) decides what a session's pages show; this decides which HTTP
requests and websockets reach Streamlit at all:

- ``/gate/...`` (the password sign-in and sign-out), ``/_stcore/health`` and the frontend's
  static files answer anyone;
- an upload (``/_stcore/upload_file/...``) needs someone signed in, and is refused before its
  body is read, so nothing of it is held;
- ``/_stcore/metrics`` needs a signed-in admin;
- with a team password, everything else too (the pages, the websocket, media): a page's
  address without a sign-in is sent to the sign-in form, anything else refused.

A team password's sign-in is this module's own HTML form. A right password sets an HttpOnly
cookie (``core.access.tokens``), which the browser alone holds: the websocket carries it, and
the shell checks it on every rerun, so a session id, which travels in upload URLs, carries no
sign-in. With an identity provider, Streamlit's own signed identity cookie is the proof.
"""

from __future__ import annotations

import html
import json
import logging
from typing import Any
from urllib.parse import parse_qs, quote, urlparse

import streamlit as st
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket
from streamlit.web.server.starlette.starlette_server_config import USER_COOKIE_NAME
from streamlit.web.server.starlette.starlette_websocket import _get_signed_cookie_with_chunks

from core import access
from core.access import tokens
from core.access.throttle import client_address

SIGN_IN, SIGN_OUT = "/gate/sign-in", "/gate/sign-out"
OWNER_HEADER = b"x-transfer-lab-owner"  # the websocket's proven owner, for Streamlit (see Gate)
_PUBLIC = ("/gate/", "/_stcore/health", "/_stcore/host-config", "/static/", "/favicon")
_UPLOADS, _METRICS = "/_stcore/upload_file/", "/_stcore/metrics"
_MAX_FORM_BYTES = 4096
_LOG = logging.getLogger(__name__)


def settings() -> access.AccessSettings:
    """The access settings from ``secrets.toml`` and the environment, as the server has them now."""
    return access.settings(secrets())


def secrets() -> dict[str, Any]:
    """``secrets.toml``'s contents; none is a local run with access off."""
    try:
        return st.secrets.to_dict()
    except FileNotFoundError:
        return {}


def signed_in_owner(cookies: dict[str, str], settings_: access.AccessSettings) -> str | None:
    """Who a request's (or a websocket's) cookies prove signed in; None when nobody."""
    if settings_.mode == access.OFF:
        return access.LOCAL_OWNER
    if settings_.mode == access.PASSWORD:
        return tokens.owner_of(cookies.get(tokens.COOKIE), _key(settings_))
    return _provider_owner(cookies, settings_)


def _provider_owner(cookies: dict[str, str], settings_: access.AccessSettings) -> str | None:
    """The owner in Streamlit's own identity cookie (signed with ``[auth] cookie_secret``), read as
    its websocket reads it, and admitted as the shell admits it."""
    try:
        raw = _get_signed_cookie_with_chunks(cookies, USER_COOKIE_NAME)
        user = json.loads(raw) if raw else {}
        return settings_.provider_owner(user) if user.get("is_logged_in") else None
    except (ValueError, access.SignInRefused):
        return None


def _key(settings_: access.AccessSettings) -> bytes:
    return tokens.signing_key(settings_.password_hash)


class Gate:
    """ASGI middleware in front of every Streamlit route: lets a request through, or answers it
    itself (a redirect to the sign-in, or a refusal) without reading its body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"].startswith(_PUBLIC):
            await self.app(scope, receive, send)
            return
        settings_ = settings()
        owner = signed_in_owner(HTTPConnection(scope).cookies, settings_)
        if not _allowed(scope["path"], settings_, owner):
            await _refuse(scope, receive, send, has_form=settings_.mode == access.PASSWORD)
            return
        if scope["type"] == "websocket":
            scope = _with_owner_header(scope, owner if settings_.mode == access.PASSWORD else None)
        await self.app(scope, receive, send)


def _allowed(path: str, settings_: access.AccessSettings, owner: str | None) -> bool:
    """Whether ``owner`` (None: nobody signed in) may have ``path`` (``local``, with access off,
    may have everything)."""
    if path == _METRICS:
        return owner is not None and settings_.viewer(owner).admin
    if path.startswith(_UPLOADS) or settings_.mode == access.PASSWORD:
        return owner is not None
    return True  # with an identity provider, the shell's sign-in button is the way in


def _with_owner_header(scope: Scope, owner: str | None) -> Scope:
    """The websocket's handshake with ``OWNER_HEADER`` set to the owner its sign-in cookie proves
    (whatever the client sent under that name dropped). Streamlit keeps the header's value in the
    session's identity (``server.trustedUserHeaders`` in ``.streamlit/config.toml``) and resumes a
    session, by its id, only for the same identity: anyone else who presents the id gets a
    session of their own, never the signed-in person's state."""
    headers = [(name, value) for name, value in scope["headers"] if name != OWNER_HEADER]
    if owner is not None:
        headers.append((OWNER_HEADER, owner.encode()))
    return {**scope, "headers": headers}


async def _refuse(scope: Scope, receive: Receive, send: Send, has_form: bool) -> None:
    """A page's address goes to the sign-in form (``has_form``: a team password's); anything
    else is refused."""
    if scope["type"] == "websocket":
        await WebSocket(scope, receive, send).close(code=1008)  # before accepting: a 403
        return
    request = Request(scope)
    is_page = request.method == "GET" and not request.url.path.startswith(("/_stcore/", "/media/"))
    if is_page and has_form:
        wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        response: Response = RedirectResponse(f"{SIGN_IN}?next={quote(wanted)}", status_code=303)
    else:
        response = PlainTextResponse("Sign in first.", status_code=403)
    await response(scope, receive, send)


async def sign_in(request: Request) -> Response:
    """The team password's sign-in form (GET), and its check (POST): a right password sets the
    sign-in cookie and goes on to the page asked for; anything else shows the form again, with
    why. Only in password mode: otherwise there is no such page."""
    settings_ = settings()
    if settings_.mode != access.PASSWORD:
        return PlainTextResponse("Not found", status_code=404)
    if request.method == "GET":
        return _form(_next_page(request.query_params.get("next")))
    origin = request.headers.get("origin")
    if origin is not None and urlparse(origin).netloc != request.url.netloc:  # a login from elsewhere
        return PlainTextResponse("This form only signs in from its own page.", status_code=403)
    body = await _small_body(request)
    if body is None:
        return PlainTextResponse("Too large for a sign-in.", status_code=413)
    fields = parse_qs(body.decode(errors="replace"))
    name, password = fields.get("name", [""])[0], fields.get("password", [""])[0]
    wanted = _next_page(fields.get("next", ["/"])[0])
    client = client_address(
        request.client.host if request.client else None,
        request.headers.get("x-forwarded-for"),
        settings_.trusted_proxies,
    )
    try:
        owner = access.owner_name(name)
        await run_in_threadpool(access.check_password, settings_, password, client, owner)
    except access.SignInRefused as refusal:
        _LOG.info("sign-in refused for %r from %s: %s", name[:64], client, refusal)
        return _form(wanted, name=name, error=str(refusal))
    response = RedirectResponse(wanted, status_code=303)
    response.set_cookie(
        tokens.COOKIE,
        tokens.issue(owner, _key(settings_)),
        max_age=int(tokens.LIFETIME_S),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


async def _small_body(request: Request) -> bytes | None:
    """The form's body, read only as far as ``_MAX_FORM_BYTES``: this page answers anyone, so
    it must not hold whatever anyone sends. None when there is more."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            return None
    return body


async def sign_out(request: Request) -> Response:
    """Forget the sign-in cookie in this browser, and show the sign-in form."""
    response = RedirectResponse(SIGN_IN, status_code=303)
    response.delete_cookie(tokens.COOKIE, httponly=True, samesite="lax")
    return response


def _next_page(wanted: str | None) -> str:
    """Where to go after sign-in: a path on this server only, never another site."""
    if not wanted or not wanted.startswith("/") or wanted.startswith(("//", "/\\", SIGN_IN)):
        return "/"
    return wanted


def _form(wanted: str, name: str = "", error: str = "") -> HTMLResponse:
    problem = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    return HTMLResponse(
        _PAGE.format(next=html.escape(wanted), name=html.escape(name), problem=problem),
        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"},
    )


def routes() -> list[Route]:
    """The gate's own pages, mounted beside Streamlit's."""
    return [Route(SIGN_IN, sign_in, methods=["GET", "POST"]), Route(SIGN_OUT, sign_out, methods=["GET"])]


def middleware() -> list[Middleware]:
    return [Middleware(Gate)]


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Transfer Lab · Sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body {{ font-family: sans-serif; color: #1B2333; background: #F3F6FB; margin: 0; }}
 main {{ max-width: 22rem; margin: 12vh auto; background: #fff; padding: 2rem; border-radius: .5rem; }}
 label {{ display: block; margin: 1rem 0 .3rem; }}
 input {{ width: 100%; box-sizing: border-box; padding: .5rem; font-size: 1rem; }}
 button {{ margin-top: 1.5rem; padding: .6rem 1.2rem; font-size: 1rem; color: #fff;
   background: #2E6BE6; border: 0; border-radius: .4rem; cursor: pointer; }}
 .error {{ color: #B42318; }}
</style></head>
<body><main>
<h1>Transfer Lab</h1>
{problem}
<form method="post" action="/gate/sign-in">
 <input type="hidden" name="next" value="{next}">
 <label for="name">Your name</label>
 <input id="name" name="name" value="{name}" autocomplete="username" required>
 <label for="password">Team password</label>
 <input id="password" name="password" type="password" autocomplete="current-password" required>
 <button type="submit">Sign in</button>
</form>
</main></body></html>
"""
