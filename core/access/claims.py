"""What an identity provider says about a person, checked strictly: the e-mail address that
becomes their owner name, and whether the provider vouches for it.

An address is one mailbox, ``local@domain``: exactly one ``@``, a dot-atom local part (RFC 5322,
without quoted strings or comments), and a domain of at least two DNS labels. Anything else
(``example.com``, ``eve@other.org@example.com``, a display name, a trailing dot) is no address,
so no allow-list can admit it. Case and surrounding spaces are normalised here, once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_ADDRESS = re.compile(rf"(?P<local>{_ATOM}(?:\.{_ATOM})*)@(?P<domain>{_LABEL}(?:\.{_LABEL})+)")


def email_address(text: object) -> str | None:
    """``text`` as one lower-case mailbox address, or None when it is not exactly one."""
    if not isinstance(text, str):
        return None
    address = text.strip().lower()
    return address if len(address) <= 254 and _ADDRESS.fullmatch(address) else None


def domain_of(address: str) -> str:
    """The domain of an address ``email_address`` returned."""
    return address.rpartition("@")[2]


def email_verified(claims: Mapping[str, Any]) -> bool | None:
    """Whether the provider says it verified the address: True, False, or None when it does not
    say (the claim is missing). A value that is neither a boolean nor "true"/"false" counts as
    not verified."""
    if "email_verified" not in claims:
        return None
    value = claims["email_verified"]
    if isinstance(value, bool):
        return value
    # Some providers send the boolean as a string: "true" is read as true, anything else is not.
    return isinstance(value, str) and value.strip().lower() == "true"
