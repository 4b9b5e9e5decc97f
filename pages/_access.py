"""The sign-in, drawn by the app shell before any page, and the viewer the pages pass to the jobs.

With access off (no secrets, no environment), everyone is ``local`` and sees everything. With
an identity provider under ``[auth]`` in ``.streamlit/secrets.toml``, Streamlit's own
``st.login`` signs people in, and ``st.user``'s claims are checked on every rerun. With a team
password, the server's sign-in form (``pages/_gate.py``) does, and this session is whoever the
sign-in cookie its browser sent names, checked on every rerun: a session id alone, resumed by
another client, proves nothing. Until then the shell draws nothing else.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlparse

import streamlit as st
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

from core import access, inert
from core.access import AccessSettings, SignInRefused, Viewer
from core.jobs import usage
from core.jobs.admission import active_jobs
from core.limits import Limits, human_bytes
from pages import _gate

VIEWER = "shell.viewer"
LIMITS = "shell.limits"  # this run's Limits, resolved by signed_in()
REQUESTED = "shell.requested_page"  # the page a link asked for before the sign-in


def signed_in() -> Viewer | None:
    """This session's viewer once signed in (always, with access off), else None; draws nothing.

    The shell asks this first on every run of the app, so this is also where the instance's
    limits are resolved, once a run, for every page and the sidebar (``limits``)."""
    settings = _gate.settings()
    st.session_state[LIMITS] = access.instance_limits(_gate.secrets())
    if settings.mode == access.OIDC:
        found = _provider_viewer(settings)
    else:  # off: local; password: the cookie this session's browser sent, if it proves a sign-in
        owner = _gate.signed_in_owner(dict(st.context.cookies), settings)
        found = settings.viewer(owner) if owner else None
    if found is None:
        st.session_state.pop(VIEWER, None)
    else:
        st.session_state[VIEWER] = found
    return found


def _provider_viewer(settings: AccessSettings) -> Viewer | None:
    """The identity provider's user, if their claims pass ``provider_owner``."""
    if not st.user.is_logged_in:
        return None
    try:
        return settings.viewer(settings.provider_owner(st.user.to_dict()))
    except SignInRefused:
        return None


def sign_in() -> None:
    """The sign-in, alone on the page: the identity provider's button, or the way to the team
    password's form (a session only gets here without the gate's cookie, or once it lapsed)."""
    settings = _gate.settings()
    st.session_state.setdefault(REQUESTED, _requested_page())
    st.title("Transfer Lab")
    if settings.mode == access.OIDC:
        _identity_provider(settings)
    else:
        wanted = quote("/" + st.session_state[REQUESTED])
        st.markdown(f"Your sign-in has ended. [Sign in]({_gate.SIGN_IN}?next={wanted}) to continue.")


def signed_in_as(signed_in_viewer: Viewer) -> None:
    """Who is signed in, and the way out, in the sidebar; nothing with access off."""
    settings = _gate.settings()
    if settings.mode == access.OFF:
        return
    with st.sidebar:
        seen = "all runs" if signed_in_viewer.sees_all else "your runs"
        st.caption(f":material/person: {inert.markdown(signed_in_viewer.owner)} · {seen}")
        if settings.mode == access.OIDC:
            st.button("Sign out", key="shell.sign_out", on_click=st.logout)
        else:
            st.button("Sign out", key="shell.sign_out", on_click=_go_to, args=(_gate.SIGN_OUT,))


def show_share(signed_in_viewer: Viewer) -> None:
    """In the sidebar, where this person stands against the limits that bound them: their jobs of
    every kind in line and their disk, so that a refusal is no surprise. Nothing where no such limit is set."""
    ceilings = limits()
    parts = []
    if ceilings.max_active_runs is not None:
        parts.append(f"{active_jobs(signed_in_viewer.owner)} of {ceilings.max_active_runs} jobs in line")
    if ceilings.disk_quota_bytes is not None:
        used = _disk_used(signed_in_viewer.owner)
        parts.append(f"{human_bytes(used)} of {human_bytes(ceilings.disk_quota_bytes)} disk")
    if parts:
        st.caption(":material/data_usage: Yours: " + " · ".join(parts))


@st.cache_data(ttl=30, show_spinner=False)
def _disk_used(owner: str) -> int:
    """An owner's disk, measured at most every 30 s: it walks their running runs' folders."""
    return usage.owner_bytes(owner)


def back_to_the_requested_page(pages: list[Any], current: Any) -> None:
    """After sign-in, the page its link named (``/train?run=...``), which the sign-in stood in for."""
    wanted = st.session_state.pop(REQUESTED, None)
    target = next((p for p in pages if wanted and p.url_path == wanted), None)
    if target is not None and target.url_path != current.url_path:
        st.switch_page(target, query_params=st.query_params.to_dict())


def _requested_page() -> str:
    """The page part of the address the browser asked for; "" for the default page or unknown."""
    url = st.context.url
    return urlparse(url).path.rstrip("/").rpartition("/")[2] if isinstance(url, str) else ""


def viewer() -> Viewer:
    """Who is looking, as the gate let them in: whose runs this page may list, open and change."""
    return st.session_state[VIEWER]


def limits() -> Limits:
    """This instance's limits: what it configures, on top of the shared defaults once access is
    on; resolved by ``signed_in`` for this run of the app."""
    return st.session_state[LIMITS]


def _go_to(address: str) -> None:
    """Send this browser tab to one of the server's own addresses (the sign-out, which clears
    the cookie), the way ``st.logout`` sends it to Streamlit's."""
    message = ForwardMsg()
    message.auth_redirect.url = address
    context = get_script_run_ctx()
    if context is not None:
        context.enqueue(message)


def _identity_provider(settings: AccessSettings) -> None:
    if not st.user.is_logged_in:
        st.write("Sign in with your organisation's account to continue.")
        st.button("Sign in", key="shell.sign_in", type="primary", icon=":material/login:", on_click=st.login)
        return
    try:
        settings.provider_owner(st.user.to_dict())
    except SignInRefused as refusal:
        st.error(inert.markdown(str(refusal)))
    st.button("Sign out", key="shell.sign_out", on_click=st.logout)
