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

    ``max_total_bytes``, the ratio checks and the pixels per MiB apply to zips (what we would
    extract and decode); a folder on the server is the administrator's own data, so only
    ``max_entries``, the pixel ceilings and ``max_classes`` apply.
    """

    max_total_bytes: int = 2 * GIB  # uncompressed bytes of the images we extract
    max_entries: int = 100_000  # entries in a zip, files in a folder
    max_ratio: float = 100.0  # uncompressed / compressed size of one entry
    max_image_pixels: int = 50_000_000  # a 50-megapixel photo decodes to 150 MB of RGB
    # Decoding costs CPU in proportion to pixels, not bytes: a 6 KB one-bit PNG of 7000x7000
    # takes a quarter of a second. An upload's images may hold at most this many pixels per MiB
    # of archive (photos hold 2-5 million, flat screenshots 10-20; so 5 s of CPU per MiB at most
    # with the slowest decoders), and at most max_total_pixels in all.
    max_pixels_per_mb: int = 100_000_000
    min_pixel_budget: int = 1_000_000  # whatever the archive's size: one modest image
    max_total_pixels: int = 50_000_000_000
    max_classes: int = 1_000  # class folders in one data set
    # Below this size an entry cannot be a bomb whatever its ratio, and small flat images (a
    # solid-colour BMP) legitimately compress 1000:1.
    ratio_min_bytes: int = 1 * MIB

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not value > 0:
                raise ValueError(f"Limits.{field.name} must be positive, got {value!r}")
