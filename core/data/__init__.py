"""Uploaded images in, a validated dataset out: the API the trainer and the pages use.

The work is split by concern: :mod:`core.data.zipsafe` (reading an untrusted zip),
:mod:`core.data.layout` (classes and splits from paths), :mod:`core.data.images` (decoding one image),
:mod:`core.data.ingestion` (the whole pipeline and the splits), :mod:`core.data.report` (what the user should
know) and :mod:`core.data.cache` (decode once, train many epochs).
"""

from __future__ import annotations

from core.data.cache import ImageCache
from core.data.images import decode_image
from core.data.ingestion import Dataset, Sample, ingest
from core.data.limits import IngestError
from core.data.report import DatasetReport
from core.limits import Limits

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
