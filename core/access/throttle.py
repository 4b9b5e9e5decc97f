"""Failed password sign-ins, counted so that guessing is slow and a burst cannot lock a team out.

Each try is weighed against three budgets, each a count of failures with the time of the last:

- a name from an address (``eve`` from 203.0.113.7): the guesser's own, its wait doubling from
  the first failure up to a quarter of an hour;
- the address, whatever names it types: a few failures free, then a wait of at most a minute,
  so that names typed at random buy no fresh guesses, and a burst from behind a shared proxy
  keeps colleagues out for a minute at most;
- the instance: a ceiling over everyone, also a minute at most.

The wait is read and the try counted in one locked step, before the password is checked: of
many tries sent at once, one is checked and the others are refused unchecked. A right password
takes its count back. The table lives in ``access/failures.json`` under a file lock, so every
session and every server process on the home folder shares it; entries lapse, and the table
keeps its newest ``max_entries``. An admin clears it with ``python -m core unlock-sign-in``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import storage
from core.errors import TransferLabError

# Failures older than this (and than their wait) are forgotten.
FORGET_AFTER_S = 24 * 3600.0
MAX_ENTRIES = 2000
_EVERYONE = "everyone"


class SignInRefused(TransferLabError):
    """A sign-in that did not succeed, with why in one line (what the person sees)."""


@dataclass(frozen=True)
class Budget:
    """How failures under one key turn into a wait: the first ``free`` cost nothing, each
    further one doubles the wait from one second, up to ``max_wait_s``; a key with no failure
    for ``forget_after_s`` starts again."""

    free: int
    max_wait_s: float
    forget_after_s: float
    refusal: str  # what the person is told while this budget's wait lasts

    def wait_after(self, failures: int) -> float:
        over = failures - self.free
        return min(self.max_wait_s, 2.0 ** (over - 1)) if over > 0 else 0.0


NAME = Budget(0, 900.0, FORGET_AFTER_S, "Too many failed sign-ins for {name} from your address")
ADDRESS = Budget(5, 60.0, 3600.0, "Too many failed sign-ins from your address")
INSTANCE = Budget(20, 60.0, 600.0, "Too many failed sign-ins on this instance")
MAX_DELAY_S = NAME.max_wait_s


def client_address(peer: str | None, forwarded_for: str | None, trusted_proxies: tuple[str, ...]) -> str:
    """Whom failures are counted against: the connecting address; when that is a proxy the admin
    named, the nearest address in ``X-Forwarded-For`` that is not one. Anyone can write that
    header, so nothing else believes it: where the web server in front of the app has already
    taken the peer from it (uvicorn does for loopback peers), and no proxy is named, every such
    try counts under one shared name. An IPv6 address counts by its /64, which one host commonly
    holds whole."""
    hops = [_host(hop) for hop in (forwarded_for or "").split(",") if hop.strip()]
    address = peer or "unknown"
    if address in trusted_proxies and hops:
        address = next((hop for hop in reversed(hops) if hop not in trusted_proxies), address)
    elif address in hops and not trusted_proxies:
        address = "forwarded"
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if parsed.version == 6:
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def _host(hop: str) -> str:
    """``1.2.3.4``, ``1.2.3.4:5678``, ``[2001:db8::1]:5678`` or ``2001:db8::1``: the address alone."""
    hop = hop.strip()
    if hop.startswith("["):
        return hop[1:].partition("]")[0]
    return hop.partition(":")[0] if hop.count(":") == 1 else hop


class FailureThrottle:
    """The failures table: ``attempt`` before a password check, ``succeeded`` after a right one."""

    def __init__(self, path: Path | None = None, max_entries: int = MAX_ENTRIES) -> None:
        self.path = path or storage.home() / "access" / "failures.json"
        self.max_entries = max_entries

    def attempt(self, name: str, client: str, now: float | None = None) -> float:
        """Take one try for ``name`` from ``client``: ``SignInRefused`` while a wait lasts (the
        password is then not checked); otherwise the try is counted as failed up front (a right
        password takes it back: ``succeeded``), and returns the wait it imposes if it failed."""
        now = time.time() if now is None else now
        keys = _keys(name, client)
        with self._table(now, write=True) as table:
            entries = {key: _current(table, key, budget, now) for key, budget in keys.items()}
            waits = [(_wait(entries[key], budget, now), budget) for key, budget in keys.items()]
            wait, budget = max(waits, key=lambda pair: pair[0])
            if wait > 0:
                raise SignInRefused(f"{budget.refusal.format(name=name)}: try again in {wait:.0f} s")
            for key in keys:
                table[key] = {"count": entries[key]["count"] + 1, "last": now}
            return max(budget.wait_after(table[key]["count"]) for key, budget in keys.items())

    def succeeded(self, name: str, client: str) -> None:
        """The password was right: this name's failures from this address are forgotten, and the
        try ``attempt`` counted is taken back from the address and the instance."""
        with self._table(time.time(), write=True) as table:
            for key in _keys(name, client):
                entry = table.get(key)
                if entry is None:
                    continue
                entry["count"] -= 1
                if key.startswith("name:") or entry["count"] <= 0:
                    del table[key]

    def wait_s(self, name: str, client: str, now: float | None = None) -> float:
        """Seconds before ``name`` may try again from ``client``; 0 when it may now."""
        now = time.time() if now is None else now
        with self._table(now) as table:
            keys = _keys(name, client)
            return max(_wait(_current(table, key, budget, now), budget, now) for key, budget in keys.items())

    def unlock(self, name: str | None = None) -> int:
        """Forget the failures of ``name`` (from every address), or all failures when None;
        returns how many entries went. An admin's way out of a lock-out."""
        with self._table(time.time(), write=True) as table:
            gone = [key for key in table if name is None or key.startswith(f"name:{name}|")]
            for key in gone:
                del table[key]
            return len(gone)

    def entries(self, now: float | None = None) -> dict[str, dict[str, Any]]:
        """The live table, key by key (for the admin and the tests)."""
        with self._table(time.time() if now is None else now) as table:
            return dict(table)

    @contextlib.contextmanager
    def _table(self, now: float, write: bool = False) -> Iterator[dict[str, dict[str, Any]]]:
        """The failures by key, lapsed ones dropped; written back, newest first and at most
        ``max_entries`` of them, when ``write``."""
        with storage.locked(self.path.with_suffix(".lock")):
            stored = storage.read_json(self.path, {})
            table = {
                key: entry
                for key, entry in (stored.items() if isinstance(stored, dict) else ())
                if _live(entry, now)  # a damaged file forgets, rather than locking everyone out
            }
            yield table
            if write:
                newest = sorted(table.items(), key=lambda item: item[1]["last"], reverse=True)
                storage.write_json(self.path, dict(newest[: self.max_entries]))


def _keys(name: str, client: str) -> dict[str, Budget]:
    return {f"name:{name}|{client}": NAME, f"address:{client}": ADDRESS, _EVERYONE: INSTANCE}


def _current(table: dict[str, dict[str, Any]], key: str, budget: Budget, now: float) -> dict[str, Any]:
    """The key's failures that still count: none once it has been quiet for its budget's while."""
    entry = table.get(key)
    if entry is None or now - entry["last"] > budget.forget_after_s:
        return {"count": 0, "last": now}
    return entry


def _wait(entry: dict[str, Any], budget: Budget, now: float) -> float:
    return max(0.0, entry["last"] + budget.wait_after(entry["count"]) - now)


def _live(entry: Any, now: float) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("count"), int)
        and isinstance(entry.get("last"), (int, float))
        and now - entry["last"] < FORGET_AFTER_S + MAX_DELAY_S
    )
