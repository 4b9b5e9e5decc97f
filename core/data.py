"""Uploaded images in, a validated dataset out: the API the trainer and the pages use.

The work is split by concern: :mod:`core.zipsafe` (reading an untrusted zip),
:mod:`core.layout` (classes and splits from paths), :mod:`core.images` (decoding one image),
:mod:`core.ingest` (the whole pipeline and the splits), :mod:`core.report` (what the user should
know) and :mod:`core.cache` (decode once, train many epochs).
"""

from __future__ import annotations

from core.cache import ImageCache
from core.images import decode_image
from core.ingest import Dataset, Sample, ingest
from core.limits import IngestError, Limits
from core.report import DatasetReport

__all__ = [
    "Dataset",
    "DatasetReport",
    "ImageCache",
    "IngestError",
    "Limits",
    "Sample",
    "decode_image",
    "ingest",
]
