"""Decode every image once into a square uint8 array, so that epochs never decode again.

Small caches live in RAM. Large ones are a ``np.memmap`` file under the dataset's folder: the
operating system pages them in and out, so a 10 GB cache costs page cache, not process memory,
and a second run on the same images reuses the file instead of decoding again.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core import storage
from core.data.images import RESAMPLING, read_image
from core.data.ingestion import Sample
from core.data.limits import IngestError
from core.limits import GIB

DEFAULT_MAX_RAM_BYTES = 1 * GIB


class ImageCache(torch.utils.data.Dataset):
    """Each image decoded once, resized (shorter side -> size, centre crop size x size), kept as
    uint8; RAM-backed when small, ``np.memmap`` under the dataset's folder when large.

    ``images`` is a uint8 tensor ``[N, 3, size, size]`` and ``labels`` an int64 tensor ``[N]``,
    for whole-batch access without a DataLoader.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        size: int,
        *,
        interpolation: str = "bilinear",
        cache_dir: Path | None = None,
        max_ram_bytes: int = DEFAULT_MAX_RAM_BYTES,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be a positive number of pixels, got {size!r}")
        if interpolation not in RESAMPLING:
            raise ValueError(
                f"unknown interpolation {interpolation!r}; choose one of: {', '.join(RESAMPLING)}"
            )
        self.samples = list(samples)
        self.size = size
        self.labels = torch.tensor([s.label for s in self.samples], dtype=torch.int64)
        self._resample = RESAMPLING[interpolation]
        self._progress = progress
        shape = (len(self.samples), 3, size, size)
        self.on_disk = int(np.prod(shape)) > max_ram_bytes
        if self.on_disk:
            folder = cache_dir or _default_cache_dir(self.samples)
            array = self._memmap(folder / f"{self._key(interpolation)}.u8", shape)
        else:
            array = np.empty(shape, dtype=np.uint8)
            self._fill(array)
        self.images = torch.from_numpy(array)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    def _fill(self, array: np.ndarray) -> None:
        for i, sample in enumerate(self.samples):
            array[i] = square_pixels(sample.path, self.size, self._resample)
            if self._progress:
                self._progress(i + 1, len(self.samples))

    def _memmap(self, path: Path, shape: tuple[int, ...]) -> np.ndarray:
        """Map the cache file, building it first (under a temporary name) if it is missing."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.close(fd)
            try:
                writer = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
                self._fill(writer)
                writer.flush()
                del writer
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        # Copy-on-write: the tensor is writable (torch warns on read-only arrays) while pages
        # stay shared with the file until someone writes to them, which training never does.
        return np.memmap(path, dtype=np.uint8, mode="c", shape=shape)

    def _key(self, interpolation: str) -> str:
        """Names the cache file by what went into it, so any change builds a new one."""
        digest = hashlib.sha256(f"{self.size}\0{interpolation}\n".encode())
        for sample in self.samples:
            status = sample.path.stat()
            digest.update(f"{sample.path}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
        return f"images-{self.size}-{digest.hexdigest()[:24]}"


def square_pixels(
    path: Path, size: int, resample: Image.Resampling = Image.Resampling.BILINEAR
) -> np.ndarray:
    """The image at ``path`` as uint8 ``[3, size, size]``: shorter side scaled to ``size``, then
    the centre square, done as one resize of the centre square (the same pixels, less work)."""
    try:
        image, _ = read_image(path, max_pixels=np.iinfo(np.int64).max, draft=(size, size))
    except IngestError as exc:
        raise IngestError(f"{path.name}: {exc} (the file changed after it was validated?)") from None
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = image.resize((size, size), resample, box=(left, top, left + side, top + side), reducing_gap=3.0)
    return np.asarray(square, dtype=np.uint8).transpose(2, 0, 1)


def _default_cache_dir(samples: list[Sample]) -> Path:
    """``cache/`` inside the upload's ``datasets/<sha256>/`` folder, or a shared one under home."""
    datasets = storage.datasets_dir().resolve()
    if samples:
        try:
            return datasets / samples[0].path.resolve().relative_to(datasets).parts[0] / "cache"
        except ValueError:
            pass
    return storage.home() / "cache"
