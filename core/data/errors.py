"""The error that refuses an upload, a folder or an image (the ceilings are ``core.limits``)."""

from __future__ import annotations

from core.errors import TransferLabError


class IngestError(TransferLabError, ValueError):
    """A refused upload, folder or image; ``str()`` is one line a user can act on."""
