"""Who may use the app, and whose runs each person sees.

Access is off unless configured: a local run needs no set-up, and everything it does belongs to
the owner ``local``, who sees all. Configured, it is one of two modes:

- ``oidc``: Streamlit's own sign-in (``st.login``) against the identity provider named under
  ``[auth]`` in ``.streamlit/secrets.toml``; the owner is the person's e-mail address, checked
  against an allow-list of domains and addresses. Owners are a boundary between people here.
- ``password``: one team password, kept as a hash, and a name each person types. The name is a
  label anyone can type, not a boundary.

A failed password costs a growing wait, counted per client address (globally when the address
is unknown) in a file under the home folder: a new browser session does not reset it, and every
server process sharing the home folder sees it. The ``Viewer`` is the identity the pages hand to
the jobs layer, which shows a viewer only what it may see.

No streamlit and no torch here: the pages read the secrets and pass them in.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import storage
from core.errors import TransferLabError
from core.limits import Limits, configured

LOCAL_OWNER = "local"
OFF, PASSWORD, OIDC = "off", "password", "oidc"
PASSWORD_HASH_ENV = "TRANSFER_LAB_PASSWORD_HASH"
ALLOW_ENV = "TRANSFER_LAB_ALLOW"
ADMINS_ENV = "TRANSFER_LAB_ADMINS"
SHARE_ENV = "TRANSFER_LAB_SHARE_RUNS"
# scrypt's cost: about 50 ms a check, and 16 MiB of memory, which is what makes guessing dear.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
# After the k-th failure in a row a client waits 2^(k-1) seconds, at most a quarter of an hour.
FIRST_DELAY_S = 1.0
MAX_DELAY_S = 900.0
# Failures older than this are forgotten.
FORGET_AFTER_S = 24 * 3600.0
_OWNER = re.compile(r"[\w.@+ -]{1,64}")
_GLOBAL_CLIENT = "*"


class SignInRefused(TransferLabError):
    """A sign-in that did not succeed, with why in one line (what the person sees)."""


@dataclass(frozen=True)
class Viewer:
    """Whose runs someone sees: their own (``owner``), or all of them (``sees_all``: an admin,
    a team that shares its runs, or a local run with access off); and whether they run the
    instance (``admin``: a configured admin, or the local viewer with access off), which opens
    the Admin page."""

    owner: str = LOCAL_OWNER
    sees_all: bool = True
    admin: bool = False

    def may_see(self, owner: str | None) -> bool:
        """A run or data set without a recorded owner belongs to ``local``."""
        return self.sees_all or (owner or LOCAL_OWNER) == self.owner


LOCAL = Viewer(admin=True)


@dataclass(frozen=True)
class AccessSettings:
    """How the instance is protected, read once from the secrets and the environment."""

    mode: str = OFF
    password_hash: str = ""
    allow: tuple[str, ...] = ()  # e-mail domains (``example.com``) or addresses; empty: nobody
    admins: tuple[str, ...] = ()  # owners who see every run
    share_runs: bool = False  # everyone signed in sees every run

    def viewer(self, owner: str) -> Viewer:
        """The viewer ``owner`` signs in as (``owner`` as ``owner_name`` returned it)."""
        if self.mode == OFF:
            return LOCAL
        admin = owner in self.admins
        return Viewer(owner, sees_all=self.share_runs or admin, admin=admin)

    def allows(self, email: str) -> bool:
        """Whether an identity provider's user may come in: an address or its domain is listed.

        Nobody without a list: a public provider signs in anyone on earth who has an account."""
        email = email.strip().lower()
        return email in self.allow or email.rpartition("@")[2] in self.allow


def settings(
    secrets_: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> AccessSettings:
    """The access settings from ``secrets.toml``'s contents (``[access]`` and ``[auth]``) and the
    environment, which wins where both say something.

    An ``[auth]`` section naming an identity provider means ``oidc``; otherwise a password hash
    means ``password``; otherwise access is off.
    """
    secrets_ = secrets_ or {}
    env = os.environ if env is None else env
    section = dict(secrets_.get("access") or {})
    auth = dict(secrets_.get("auth") or {})
    password_hash = env.get(PASSWORD_HASH_ENV) or str(section.get("password_hash") or "")
    if auth.get("server_metadata_url"):  # one provider, straight under [auth]: what st.login() uses
        mode = OIDC
    elif password_hash:
        mode = PASSWORD
    else:
        mode = OFF
    share = env.get(SHARE_ENV)
    return AccessSettings(
        mode=mode,
        password_hash=password_hash,
        allow=_names(env.get(ALLOW_ENV), section.get("allow")),
        admins=_names(env.get(ADMINS_ENV), section.get("admins")),
        share_runs=share.strip().lower() in ("1", "true", "yes")
        if share
        else bool(section.get("share_runs")),
    )


def instance_limits(
    secrets_: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> Limits:
    """The limits in force on this instance: ``[limits]`` and the environment, over the shared
    defaults once access is configured (an instance people share)."""
    return configured(secrets_, env, shared=settings(secrets_, env).mode != OFF)


def _names(from_env: str | None, from_secrets: Any) -> tuple[str, ...]:
    """A comma-separated variable, else the secrets' list (or comma-separated string); lower
    case, as owners are kept."""
    raw = from_env or from_secrets or ()
    names = raw.split(",") if isinstance(raw, str) else [str(name) for name in raw]
    return tuple(name.strip().lower() for name in names if name.strip())


def owner_name(text: str) -> str:
    """A typed name or an e-mail address as an owner: trimmed, lower case, at most 64 of
    letters, digits, spaces and ``. _ - @ +``; ``SignInRefused`` otherwise."""
    name = " ".join(text.split()).lower()
    if not _OWNER.fullmatch(name):
        raise SignInRefused("enter a name of 1 to 64 letters, digits, spaces, '.', '_', '-', '@' or '+'")
    return name


def hash_password(password: str) -> str:
    """The hash to configure (``scrypt$salt$digest``); the password itself is kept nowhere."""
    salt = secrets.token_bytes(16)
    return f"scrypt${salt.hex()}${_digest(password, salt).hex()}"


def _digest(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)


def password_matches(password: str, password_hash: str) -> bool:
    """Compared in constant time; a hash not in ``hash_password``'s form matches nothing."""
    scheme, _, rest = password_hash.partition("$")
    salt_hex, _, digest_hex = rest.partition("$")
    try:
        salt, expected = bytes.fromhex(salt_hex), bytes.fromhex(digest_hex)
    except ValueError:
        return False
    if scheme != "scrypt" or not salt or not expected:
        return False
    return hmac.compare_digest(_digest(password, salt), expected)


def check_password(settings_: AccessSettings, password: str, client: str | None) -> None:
    """Let ``client`` (an address; None when unknown) in with ``password``, or raise
    ``SignInRefused``: for a wrong password, and without checking, while the client's wait after
    earlier failures lasts."""
    throttle = FailureThrottle()
    wait = throttle.wait_s(client)
    if wait > 0:
        raise SignInRefused(f"too many failed sign-ins: try again in {wait:.0f} s")
    if not password_matches(password, settings_.password_hash):
        wait = throttle.failed(client)
        raise SignInRefused(f"wrong password: try again in {wait:.0f} s")
    throttle.succeeded(client)


class FailureThrottle:
    """Failed sign-ins per client in ``access/failures.json``, under a file lock, so that every
    session and every server process on the home folder counts the same failures."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or storage.home() / "access" / "failures.json"

    def wait_s(self, client: str | None, now: float | None = None) -> float:
        """Seconds before ``client`` may try again; 0 when it may now."""
        now = time.time() if now is None else now
        with self._failures(now) as failures:
            entry = failures.get(client or _GLOBAL_CLIENT)
        if not entry:
            return 0.0
        return max(0.0, entry["last"] + delay_s(entry["count"]) - now)

    def failed(self, client: str | None, now: float | None = None) -> float:
        """Count a failure; returns the wait it imposes."""
        now = time.time() if now is None else now
        with self._failures(now, write=True) as failures:
            entry = failures.setdefault(client or _GLOBAL_CLIENT, {"count": 0, "last": now})
            entry["count"] += 1
            entry["last"] = now
            return delay_s(entry["count"])

    def succeeded(self, client: str | None) -> None:
        with self._failures(time.time(), write=True) as failures:
            failures.pop(client or _GLOBAL_CLIENT, None)

    @contextlib.contextmanager
    def _failures(self, now: float, write: bool = False) -> Iterator[dict[str, dict[str, Any]]]:
        """The failures by client, old ones dropped; written back when ``write``."""
        with storage.locked(self.path.with_suffix(".lock")):
            failures = storage.read_json(self.path, {})
            if not isinstance(failures, dict):
                failures = {}  # a damaged file forgets, rather than locking everyone out
            failures = {
                client: entry
                for client, entry in failures.items()
                if now - entry.get("last", 0) < max(FORGET_AFTER_S, delay_s(entry.get("count", 1)))
            }
            yield failures
            if write:
                storage.write_json(self.path, failures)


def delay_s(failures: int) -> float:
    """The wait after ``failures`` failures in a row: 1 s, 2 s, 4 s... up to ``MAX_DELAY_S``."""
    return min(MAX_DELAY_S, FIRST_DELAY_S * 2 ** max(0, failures - 1)) if failures > 0 else 0.0


def stored_owners(path: Path) -> list[str]:
    """The owners a data set's owners file names; ``[]`` when there is none."""
    return list(owner_references(path))


def owner_references(path: Path) -> dict[str, float]:
    """Each owner in a data set's owners file, with when they last uploaded it (the epoch
    seconds that their reference counts from; retention lets it lapse). A file from before the
    times were kept is a JSON list: its owners count from the file's last change."""
    stored = storage.read_json(path, [])
    if isinstance(stored, dict):
        return {str(owner): float(when) for owner, when in stored.items()}
    if not isinstance(stored, list) or not stored:
        return {}
    written = path.stat().st_mtime
    return {str(owner): written for owner in stored}


def add_owner(path: Path, owner: str, now: float | None = None) -> None:
    """Record that ``owner`` uploaded the data set of this owners file (now): a new owner joins,
    an existing one's reference starts again."""
    references = owner_references(path) if path.exists() else {}
    references[owner] = time.time() if now is None else now
    path.parent.mkdir(parents=True, exist_ok=True)
    storage.write_json(path, references)
