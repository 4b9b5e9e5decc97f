"""What an upload may cost the server, and the error that refuses one.

Uploaded zips are untrusted input on a shared server: every limit here bounds memory, disk or
CPU time that a hostile file could otherwise claim.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from core.errors import TransferLabError

MIB = 1 << 20
GIB = 1 << 30


class IngestError(TransferLabError, ValueError):
    """A refused upload, folder or image; ``str()`` is one line a user can act on."""


@dataclass(frozen=True)
class Limits:
    """Ceilings for one ingestion; the defaults suit a shared demo server.

    ``max_total_bytes`` and the ratio checks apply to zips (what we would extract); a folder on the
    server is the administrator's own data, so only ``max_entries`` and ``max_image_pixels`` apply.
    """

    max_total_bytes: int = 2 * GIB  # uncompressed bytes of the images we extract
    max_entries: int = 100_000  # entries in a zip, files in a folder
    max_ratio: float = 100.0  # uncompressed / compressed size of one entry
    max_image_pixels: int = 50_000_000  # a 50-megapixel photo decodes to 150 MB of RGB
    # Below this size an entry cannot be a bomb whatever its ratio, and small flat images (a
    # solid-colour BMP) legitimately compress 1000:1.
    ratio_min_bytes: int = 1 * MIB

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not value > 0:
                raise ValueError(f"Limits.{field.name} must be positive, got {value!r}")
