"""Decode every image once into a square uint8 array, so that epochs never decode again.

Small caches live in RAM. Large ones are a ``np.memmap`` file under the dataset's folder: the
operating system pages them in and out, so a 10 GB cache costs page cache, not process memory,
and a second run on the same images reuses the file instead of decoding again.

Either way the images are decoded by :mod:`core.data.decode`, in worker processes over every
usable core once there are enough of them, each writing its images straight into the array.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from core import storage
from core.data import decode
from core.data.decode import square_pixels
from core.data.images import RESAMPLING
from core.data.ingestion import Sample
from core.limits import GIB

__all__ = ["DEFAULT_MAX_RAM_BYTES", "ImageCache", "square_pixels"]
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
        workers = decode.workers_for(len(self.samples), decode.Squares.item_s(size))
        if self.on_disk:
            folder = cache_dir or _default_cache_dir(self.samples)
            array = self._memmap(folder / f"{self._key(interpolation)}.u8", shape, workers)
        else:
            array = self._in_memory(shape, workers)
        self.images = torch.from_numpy(array)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    def _in_memory(self, shape: tuple[int, ...], workers: int) -> np.ndarray:
        """The array in RAM; in a memory file when workers fill it, so they write where it lives."""
        fd = decode.memory_file(int(np.prod(shape))) if workers > 1 else None
        if fd is None:
            array = np.empty(shape, dtype=np.uint8)
            self._fill(decode.Squares(array, self._resample), 1)
            return array
        try:
            task = decode.Squares(decode.mapped(fd, shape), self._resample, fd)
            self._fill(task, workers)
        finally:
            os.close(fd)  # the mapping keeps the memory for as long as the array lives
        return task.array

    def _fill(self, task: decode.Squares, workers: int) -> None:
        total, done = len(self.samples), 0

        def finished(results: decode.Results) -> None:
            nonlocal done
            done += len(results)
            if self._progress:
                self._progress(done, total)

        with decode.Pool(task, workers, finished) as pool:
            for sample in self.samples:
                pool.put(str(sample.path))
            pool.join()

    def _memmap(self, path: Path, shape: tuple[int, ...], workers: int) -> np.ndarray:
        """Map the cache file, building it first (under a temporary name) if it is missing."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                _reserve(fd, int(np.prod(shape)), path)
                self._fill(decode.Squares(decode.mapped(fd, shape), self._resample, fd), workers)
                os.fsync(fd)  # every process's writes, before the name says the file is complete
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            finally:
                os.close(fd)
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


def _reserve(fd: int, nbytes: int, path: Path) -> None:
    """Give the file its ``nbytes`` now: a full disk is then an error naming the cache file,
    where writing into a sparse mapping would kill the writer with SIGBUS halfway through."""
    os.ftruncate(fd, nbytes)
    if hasattr(os, "posix_fallocate"):  # not on macOS, where the file stays sparse
        try:
            os.posix_fallocate(fd, 0, nbytes)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(path)) from None


def _default_cache_dir(samples: list[Sample]) -> Path:
    """``cache/`` inside the upload's ``datasets/<sha256>/`` folder, or a shared one under home."""
    datasets = storage.datasets_dir().resolve()
    if samples:
        try:
            return datasets / samples[0].path.resolve().relative_to(datasets).parts[0] / "cache"
        except ValueError:
            pass
    return storage.cache_dir()
