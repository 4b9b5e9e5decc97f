"""What one person, one upload and one run may cost the server: one settings object.

Uploaded zips are untrusted input on a shared server: the ingestion ceilings bound the memory,
disk and CPU time a hostile file could otherwise claim. The instance limits keep ordinary
misuse on a shared instance from knocking it over: how many jobs of any kind (training,
validating, analysing, estimating, predicting) one person may have queued or running, how many
jobs besides training the instance runs at once, how long and how large a run may be, how much disk one owner may fill, and how long
finished runs are kept.

A local run (access off) has no instance limits unless it configures them; a shared instance
(access configured) gets ``SHARED_DEFAULTS`` for whatever it leaves unsaid. Each limit comes
from the environment (``TRANSFER_LAB_<NAME>``) or from ``[limits]`` in
``.streamlit/secrets.toml``, the environment winning; ``none`` or ``0`` turns an instance limit
off. No streamlit and no torch here: the server reads it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from core.errors import TransferLabError

MIB = 1 << 20
GIB = 1 << 30
DAY_S = 24 * 3600.0
SIZE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")  # what human_bytes writes, 1024 apart
ENV_PREFIX = "TRANSFER_LAB_"


class LimitExceeded(TransferLabError):
    """A submission or an upload over a configured limit; ``str()`` is one line naming it."""


@dataclass(frozen=True)
class Limits:
    """The ceilings in force; the ingestion ones always apply, the instance ones when set.

    ``max_total_bytes``, the ratio checks and the pixels per MiB apply to zips (what we would
    extract and decode); a folder on the server is the administrator's own data, so only
    ``max_entries``, the pixel ceilings and ``max_classes`` apply.
    """

    # ---- one upload (and one ingestion)
    max_upload_bytes: int = GIB  # the zip as uploaded
    max_total_bytes: int = 2 * GIB  # uncompressed bytes of the images we extract
    max_entries: int = 100_000  # files (images) in a zip, files in a folder
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
    # ---- the instance (None: no limit)
    max_active_runs: int | None = None  # per owner: their jobs of every kind queued or running
    max_side_jobs: int | None = None  # on the instance: jobs besides training running at once
    max_epochs: int | None = None  # per run
    max_image_size: int | None = None  # pixels on a side, per run
    disk_quota_bytes: int | None = None  # per owner: their runs and the data sets they uploaded
    keep_runs_days: float | None = None  # finished runs older than this are deleted

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None and not value > 0:
                raise ValueError(f"Limits.{field.name} must be positive, got {value!r}")

    def check_plan(self, epochs: int, image_size: int | None) -> None:
        """``LimitExceeded`` for a run longer or larger than this instance allows. A plan that
        leaves its image size to the backbone is refused under a cap: the backbone's own size
        (224 px for most) is what would train, unchecked."""
        if self.max_epochs is not None and epochs > self.max_epochs:
            raise LimitExceeded(f"{epochs} epochs is over this instance's limit of {self.max_epochs} a run")
        if self.max_image_size is not None and image_size is None:
            raise LimitExceeded(
                f"the plan leaves its image size to the backbone; this instance allows {self.max_image_size} px"
                " at most: give an image size"
            )
        if self.max_image_size is not None and image_size is not None and image_size > self.max_image_size:
            raise LimitExceeded(
                f"image size {image_size} px is over this instance's limit of {self.max_image_size} px"
            )

    def check_upload(self, size: int) -> None:
        """``LimitExceeded`` for a zip larger than an upload may be."""
        if size > self.max_upload_bytes:
            raise LimitExceeded(
                f"the zip is {human_bytes(size)}; uploads are limited to {human_bytes(self.max_upload_bytes)}"
            )


def size_unit(size: float) -> str:
    """The unit ``human_bytes`` writes ``size`` in (one of ``SIZE_UNITS``): the largest that keeps
    the number at 1 or more."""
    for unit in SIZE_UNITS[:-1]:
        if abs(size) < 1024:
            return unit
        size /= 1024
    return SIZE_UNITS[-1]


def human_bytes(size: float) -> str:
    """``1.5 GiB``, ``230 MiB``, ``12.0 KiB``, ``87 B``: sizes as people read them."""
    unit = size_unit(size)
    size /= 1024 ** SIZE_UNITS.index(unit)
    return f"{size:,.0f} {unit}" if unit == "B" or abs(size) >= 100 else f"{size:,.1f} {unit}"


# What a shared instance gets for each instance limit it leaves unsaid (six active jobs: one race of
# the cases fits; two jobs besides training at once: each may take a gigabyte or two of memory).
SHARED_DEFAULTS = Limits(
    max_active_runs=6, max_side_jobs=2, max_epochs=100, max_image_size=512, disk_quota_bytes=20 * GIB,
    keep_runs_days=30.0,
)  # fmt: skip
# Each configurable limit: its name in ``[limits]`` and, upper-cased after the prefix, in the
# environment; and the factor from the unit it is given in to the field's.
_SETTINGS = {
    "max_upload_mb": ("max_upload_bytes", MIB),
    "max_images": ("max_entries", 1),
    "max_active_runs": ("max_active_runs", 1),
    "max_side_jobs": ("max_side_jobs", 1),
    "max_epochs": ("max_epochs", 1),
    "max_image_size": ("max_image_size", 1),
    "disk_quota_gb": ("disk_quota_bytes", GIB),
    "keep_runs_days": ("keep_runs_days", 1),
}
_INSTANCE = (
    "max_active_runs",
    "max_side_jobs",
    "max_epochs",
    "max_image_size",
    "disk_quota_bytes",
    "keep_runs_days",
)
_OFF = ("", "0", "none", "off")


def configured(
    secrets_: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None, *, shared: bool = False
) -> Limits:
    """The limits from ``[limits]`` in the secrets and from the environment (which wins), on top
    of the defaults: ``SHARED_DEFAULTS`` for a ``shared`` instance, else no instance limits.

    A value that is not a positive number is refused with one line naming the setting.
    """
    env = os.environ if env is None else env
    section = dict((secrets_ or {}).get("limits") or {})
    base = SHARED_DEFAULTS if shared else Limits()
    chosen: dict[str, Any] = {}
    for name, (field, unit) in _SETTINGS.items():
        raw = env.get(ENV_PREFIX + name.upper())
        raw = section.get(name) if raw is None else raw
        if raw is None:
            continue
        if str(raw).strip().lower() in _OFF and field in _INSTANCE:
            chosen[field] = None
            continue
        chosen[field] = _number(name, raw, unit, whole=field != "keep_runs_days")
    return replace(base, **chosen)


def _number(name: str, raw: Any, unit: int, whole: bool) -> int | float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = float("nan")
    if not value > 0 or (whole and unit == 1 and not value.is_integer()):
        kind = "a whole number" if whole and unit == 1 else "a number"
        raise ValueError(
            f"{ENV_PREFIX}{name.upper()} (or [limits] {name}) = {raw!r}: expected {kind} above 0"
        )
    scaled = value * unit
    return round(scaled) if whole else scaled
