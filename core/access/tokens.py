"""The password sign-in's proof, kept by the browser: a signed value naming the owner and when it
lapses, which the server sets as an HttpOnly cookie and checks on every request and every rerun.

A Streamlit session id is no proof (it travels in upload URLs, and any client may resume a
session with it); this value is, because only the browser that signed in holds it and scripts
in the page cannot read it. The server keeps nothing per sign-in: the value is
``owner.expires.signature``, the owner in base64url and the signature an HMAC-SHA256 of both.
The key is random, made once per home folder (``access/sign_in.key``, readable by the server's
user alone), and mixed with the team password's hash, so that a new password signs everyone out.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

from core import storage

COOKIE = "transfer_lab_sign_in"
LIFETIME_S = 12 * 3600.0  # a working day; then the person signs in again


def signing_key(password_hash: str, path: Path | None = None) -> bytes:
    """The key sign-ins are signed with while ``password_hash`` is the team password's."""
    path = path or storage.home() / "access" / "sign_in.key"
    return hmac.new(_instance_secret(path), password_hash.encode(), hashlib.sha256).digest()


def issue(owner: str, key: bytes, now: float | None = None) -> str:
    """The value that proves ``owner`` signed in, for ``LIFETIME_S`` from ``now``."""
    expires = int((time.time() if now is None else now) + LIFETIME_S)
    payload = f"{_b64(owner.encode())}.{expires}"
    return f"{payload}.{_sign(payload, key)}"


def owner_of(value: str | None, key: bytes, now: float | None = None) -> str | None:
    """The owner a value proves, or None: no value, a forged or damaged one, or one that lapsed."""
    owner_b64, _, rest = (value or "").partition(".")
    expires, _, signature = rest.partition(".")
    payload = f"{owner_b64}.{expires}"
    if not signature or not hmac.compare_digest(signature, _sign(payload, key)):
        return None
    if not expires.isdigit() or int(expires) <= (time.time() if now is None else now):
        return None
    with contextlib.suppress(binascii.Error, UnicodeDecodeError):
        return base64.urlsafe_b64decode(owner_b64 + "=" * (-len(owner_b64) % 4)).decode()
    return None


def _sign(payload: str, key: bytes) -> str:
    return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _instance_secret(path: Path) -> bytes:
    """This home folder's random secret, made on first use. Made beside its place and linked in,
    so that two processes starting at once agree on one."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(32))
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
        draft.unlink()
    return path.read_bytes()
