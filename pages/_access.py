"""The sign-in, drawn by the app shell before any page, and the viewer the pages pass to the jobs.

With access off (no secrets, no environment), everyone is ``local`` and sees everything. With
an identity provider under ``[auth]`` in ``.streamlit/secrets.toml``, Streamlit's own
``st.login`` signs people in; with a team password, a name and the password do. Until then the
shell draws nothing else.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import streamlit as st

from core import access, inert, jobs
from core.access import AccessSettings, SignInRefused, Viewer
from core.jobs import usage
from core.limits import Limits, human_bytes

VIEWER = "access_viewer"
SIGNED_IN = "access_owner"  # password mode: the name this session signed in with
LIMITS = "access_limits"  # this run's Limits, resolved by signed_in()
REQUESTED = "access_requested_page"  # the page a link asked for before the sign-in


def signed_in() -> Viewer | None:
    """This session's viewer once signed in (always, with access off), else None; draws nothing.

    The shell asks this first on every run of the app, so this is also where the instance's
    limits are resolved, once a run, for every page and the sidebar (``limits``)."""
    settings = _settings()
    st.session_state[LIMITS] = access.instance_limits(_secrets())
    if settings.mode == access.OFF:
        found: Viewer | None = access.LOCAL
    elif settings.mode == access.OIDC:
        found = _provider_viewer(settings)
    else:
        owner = st.session_state.get(SIGNED_IN)
        found = settings.viewer(owner) if owner else None
    if found is None:
        st.session_state.pop(VIEWER, None)
    else:
        st.session_state[VIEWER] = found
    return found


def _provider_viewer(settings: AccessSettings) -> Viewer | None:
    """The identity provider's user, if signed in with an e-mail address the allow-list admits."""
    email = str(st.user.get("email") or "") if st.user.is_logged_in else ""
    if not email or st.user.get("email_verified") is False or not settings.allows(email):
        return None
    try:
        return settings.viewer(access.owner_name(email))
    except SignInRefused:  # an address no owner can be named after
        return None


def sign_in() -> None:
    """The sign-in, alone on the page: the identity provider's button, or name and password."""
    settings = _settings()
    st.session_state.setdefault(REQUESTED, _requested_page())
    st.title("Transfer Lab")
    if settings.mode == access.OIDC:
        _identity_provider(settings)
    else:
        _team_password(settings)


def signed_in_as(signed_in_viewer: Viewer) -> None:
    """Who is signed in, and the way out, in the sidebar; nothing with access off."""
    settings = _settings()
    if settings.mode == access.OFF:
        return
    with st.sidebar:
        seen = "all runs" if signed_in_viewer.sees_all else "your runs"
        st.caption(f":material/person: {inert.markdown(signed_in_viewer.owner)} · {seen}")
        if settings.mode == access.OIDC:
            st.button("Sign out", key="sign_out", on_click=st.logout)
        elif st.button("Sign out", key="sign_out"):
            st.session_state.pop(SIGNED_IN, None)
            st.rerun()


def show_share(signed_in_viewer: Viewer) -> None:
    """In the sidebar, where this person stands against the limits that bound them: their jobs of
    every kind in line and their disk, so that a refusal is no surprise. Nothing where no such limit is set."""
    ceilings = limits()
    parts = []
    if ceilings.max_active_runs is not None:
        parts.append(f"{jobs.active_jobs(signed_in_viewer.owner)} of {ceilings.max_active_runs} jobs in line")
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


def _settings() -> AccessSettings:
    return access.settings(_secrets())


def _secrets() -> dict[str, Any]:
    """``secrets.toml``'s contents; none is a local run with access off."""
    try:
        return st.secrets.to_dict()
    except FileNotFoundError:
        return {}


def _identity_provider(settings: AccessSettings) -> None:
    if not st.user.is_logged_in:
        st.write("Sign in with your organisation's account to continue.")
        st.button("Sign in", key="sign_in", type="primary", icon=":material/login:", on_click=st.login)
        return
    email = str(st.user.get("email") or "")
    if not settings.allow:
        st.error("No one may sign in yet: the administrator has not listed who may (`[access] allow`).")
    else:
        st.error(
            f"{inert.markdown(email) or 'This account'} may not use this instance. Ask its administrator."
        )
    st.button("Sign out", key="sign_out", on_click=st.logout)


def _team_password(settings: AccessSettings) -> None:
    with st.form("sign_in_form"):
        name = st.text_input("Your name", key="sign_in_name", help="Your runs are listed under it.")
        password = st.text_input("Team password", type="password", key="sign_in_password")
        submitted = st.form_submit_button(
            "Sign in", key="sign_in_submit", type="primary", icon=":material/login:"
        )
    if not submitted:
        return
    try:
        owner = access.owner_name(name)
        access.check_password(settings, password, _client_address())
    except SignInRefused as exc:
        st.error(str(exc), icon=":material/block:")
        return
    st.session_state[SIGNED_IN] = owner
    st.rerun()


def _client_address() -> str | None:
    """The browser's address, by which failed sign-ins are counted; None (counted for everyone
    together) when the server cannot tell, as under the headless test runner."""
    address = st.context.ip_address
    return address if isinstance(address, str) and address else None
