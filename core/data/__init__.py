"""Uploaded images in, a validated dataset out: the API the trainer and the pages use.

The work is split by concern: :mod:`core.data.zipsafe` (reading an untrusted zip),
:mod:`core.data.layout` (classes and splits from paths), :mod:`core.data.images` (decoding one image),
:mod:`core.data.ingestion` (the whole pipeline and the splits), :mod:`core.data.report` (what the user should
know), :mod:`core.data.decode` (many images over every core) and :mod:`core.data.cache` (decode once,
train many epochs).

Each name is imported on first use: only the cache needs torch, and ingestion, the pages and the
decoding workers (which import this package too) start without its seconds and hundreds of
megabytes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.data.cache import ImageCache
    from core.data.errors import IngestError
    from core.data.images import decode_image
    from core.data.ingestion import Dataset, Sample, ingest, stored_dataset, stored_images
    from core.data.report import DatasetReport
    from core.limits import Limits

# Each name and the module it comes from, imported when first asked for.
_HOMES = {
    "Dataset": "core.data.ingestion",
    "DatasetReport": "core.data.report",
    "ImageCache": "core.data.cache",
    "IngestError": "core.data.errors",
    "Limits": "core.limits",
    "Sample": "core.data.ingestion",
    "decode_image": "core.data.images",
    "ingest": "core.data.ingestion",
    "stored_dataset": "core.data.ingestion",
    "stored_images": "core.data.ingestion",
}
__all__ = [
    "Dataset",
    "DatasetReport",
    "ImageCache",
    "IngestError",
    "Limits",
    "Sample",
    "decode_image",
    "ingest",
    "stored_dataset",
    "stored_images",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
