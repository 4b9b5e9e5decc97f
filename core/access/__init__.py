"""Who may use the app, and whose runs each person sees.

Access is off unless configured: a local run needs no set-up, and everything it does belongs to
the owner ``local``, who sees all. Configured, it is one of two modes:

- ``oidc``: Streamlit's own sign-in (``st.login``) against the identity provider named under
  ``[auth]`` in ``.streamlit/secrets.toml``; the owner is the person's e-mail address, checked
  against an allow-list of domains and addresses. Owners are a boundary between people here.
- ``password``: one team password, kept as a hash, and a name each person types. The name is a
  label anyone can type, not a boundary.

A failed password costs a growing wait (``throttle``), and a right one a signed cookie that the
browser alone holds (``tokens``); an identity provider's claims are read strictly (``claims``).
The ``Viewer`` is the identity the pages hand to the jobs layer, which shows a viewer only what
it may see.

No streamlit and no torch here: the pages read the secrets and pass them in.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import storage
from core.access import claims
from core.access.throttle import FailureThrottle, SignInRefused
from core.limits import Limits, configured

LOCAL_OWNER = "local"
OFF, PASSWORD, OIDC = "off", "password", "oidc"
PASSWORD_HASH_ENV = "TRANSFER_LAB_PASSWORD_HASH"
ALLOW_ENV = "TRANSFER_LAB_ALLOW"
ADMINS_ENV = "TRANSFER_LAB_ADMINS"
SHARE_ENV = "TRANSFER_LAB_SHARE_RUNS"
PROXIES_ENV = "TRANSFER_LAB_TRUSTED_PROXIES"
# scrypt's cost: about 50 ms a check, and 16 MiB of memory, which is what makes guessing dear.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_OWNER = re.compile(r"[\w.@+ -]{1,64}")


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
    trusted_proxies: tuple[str, ...] = ()  # addresses whose X-Forwarded-For is believed

    def viewer(self, owner: str) -> Viewer:
        """The viewer ``owner`` signs in as (``owner`` as ``owner_name`` returned it)."""
        if self.mode == OFF:
            return LOCAL
        admin = owner in self.admins
        return Viewer(owner, sees_all=self.share_runs or admin, admin=admin)

    def allows(self, email: str) -> bool:
        """Whether an identity provider's user may come in: the address (exactly one mailbox) or
        its domain is listed.

        Nobody without a list: a public provider signs in anyone on earth who has an account."""
        address = claims.email_address(email)
        return address is not None and (address in self.allow or claims.domain_of(address) in self.allow)

    def provider_owner(self, user: Mapping[str, Any]) -> str:
        """The owner an identity provider's user (their ID token's claims) signs in as, or
        ``SignInRefused`` saying why not: no single mailbox address, an address the provider
        says it has not verified, or one the allow-list does not admit. A provider that does not
        say whether it verified the address is trusted to have (docs/access.md)."""
        shown = str(user.get("email") or "This account")
        address = claims.email_address(user.get("email"))
        if address is None:
            raise SignInRefused(f"{shown} may not use this instance: it is not one e-mail address.")
        if claims.email_verified(user) is False:
            raise SignInRefused(
                f"{address} may not use this instance: your provider has not verified this address."
            )
        if not self.allow:
            raise SignInRefused(
                f"{address} may not use this instance: the administrator has not listed who may"
                " (`[access] allow`)."
            )
        if not self.allows(address):
            raise SignInRefused(f"{address} may not use this instance. Ask its administrator.")
        return owner_name(address)


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
        trusted_proxies=_names(env.get(PROXIES_ENV), section.get("trusted_proxies")),
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


def check_password(settings_: AccessSettings, password: str, client: str, name: str = "") -> None:
    """Let ``name`` in from ``client`` (an address, as ``throttle.client_address`` gives it) with
    ``password``, or raise ``SignInRefused``: for a wrong password, and without checking it
    while a wait after earlier failures lasts (``throttle``)."""
    failures = FailureThrottle()
    wait = failures.attempt(name, client)
    if not password_matches(password, settings_.password_hash):
        raise SignInRefused(f"wrong password: try again in {wait:.0f} s")
    failures.succeeded(name, client)


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
