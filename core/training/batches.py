"""Where training batches come from: decoded images, or features a frozen body computed once.

Frozen bodies (cases 1 and 2) see each image once: its centre crop, as validation and prediction
see it, plus any augmented views the plan asks for. The new layer is then fitted on those
features (``core.training.head``) and costs almost nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from core.data.cache import ImageCache
from core.models.preprocess import Preprocess
from core.models.runtime import Engine
from core.training.device import Accelerator
from core.training.loop import Batch
from core.training.resizing import SizeSchedule
from core.training.transforms import resize_images, to_model_input


class ImageSource:
    """Model inputs made on the device from a cache of resized uint8 images.

    On CUDA a cache that fits in ``DEVICE_CACHE_FRACTION`` of the free GPU memory is copied to
    the GPU once: each batch is then an index into it, and no step waits for a copy from the
    host. A larger one stays in host memory, and each batch travels pinned, as uint8.
    """

    DEVICE_CACHE_FRACTION = 0.25  # of the free GPU memory; the rest is for training itself

    def __init__(
        self,
        cache: ImageCache,
        pre: Preprocess,
        accel: Accelerator,
        *,
        train: bool,
        augment: str = "none",
        seed: int = 0,
        placed: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        self.cache, self.pre, self.accel = cache, pre, accel
        self.train, self.augment = train, augment
        # Augmentation draws from its own CPU generator: a seeded run augments alike on any device.
        self.generator = torch.Generator().manual_seed(seed)
        # The pixels and labels where batches are indexed from: the cache's, or a copy on the GPU.
        self.pixels, self.labels = placed or self._place(cache, accel)

    @staticmethod
    def fits_on_device(cache_bytes: int, free_bytes: int) -> bool:
        """Whether a cache of ``cache_bytes`` goes to a GPU with ``free_bytes`` free."""
        return cache_bytes <= ImageSource.DEVICE_CACHE_FRACTION * free_bytes

    @staticmethod
    def _place(cache: ImageCache, accel: Accelerator) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = cache.images, cache.labels
        if accel.device.type != "cuda":
            return images, labels
        free, _ = torch.cuda.mem_get_info(accel.device)
        if not ImageSource.fits_on_device(images.numel() * images.element_size(), free):
            return images, labels
        return images.to(accel.device), labels.to(accel.device)

    def __len__(self) -> int:
        return len(self.cache)

    def centred(self) -> ImageSource:
        """The same images as validation sees them: the centre crop, no augmentation."""
        return ImageSource(self.cache, self.pre, self.accel, train=False, placed=(self.pixels, self.labels))

    def resized(self, crop: int) -> ImageSource:
        """The same images at another crop size: the cache resized once, where it lives, with the
        resize/crop margin kept; augmentation goes on drawing from the same generator."""
        pre = self.pre.scaled_to(crop)
        pixels = resize_images(self.pixels, pre.resize, pre.interpolation)
        source = ImageSource(
            self.cache, pre, self.accel, train=self.train, augment=self.augment, placed=(pixels, self.labels)
        )
        source.generator = self.generator
        return source

    def load(self, indices: torch.Tensor, epoch: int) -> Batch:
        device, pinned = self.accel.device, self.accel.pin_memory
        if self.pixels.device == device:  # on the GPU already, or training on the CPU
            # A pinned copy of the indices is the one host-to-device copy that waits for nothing.
            where = indices.pin_memory().to(device, non_blocking=True) if pinned else indices.to(device)
            pixels, labels = self.pixels[where], self.labels[where]
        else:
            pixels, labels = self.pixels[indices], self.labels[indices]
            if pinned:
                pixels, labels = pixels.pin_memory(), labels.pin_memory()
            # Augment on the device, from uint8 that travels four times lighter than floats.
            pixels = pixels.to(device, non_blocking=pinned)
            labels = labels.to(device, non_blocking=pinned)
        inputs = to_model_input(
            pixels, self.pre, train=self.train, augment=self.augment, generator=self.generator
        )
        return self.accel.to_device(inputs), labels


class ResizingSource:
    """Training batches at each epoch's image size (progressive resizing, ``SizeSchedule``).

    The first epoch at a smaller size resizes the decoded cache once, a second cache level: that
    costs what resizing each batch of one epoch would, and nothing in the epochs after. Only the
    current size is kept besides the full-size cache.
    """

    def __init__(self, source: ImageSource, schedule: SizeSchedule) -> None:
        self.full, self.schedule = source, schedule
        self.current = source

    def __len__(self) -> int:
        return len(self.full)

    def load(self, indices: torch.Tensor, epoch: int) -> Batch:
        size = self.schedule.at(epoch)
        if self.current.pre.crop != size:
            self.current = self.full if size == self.full.pre.crop else self.full.resized(size)
        return self.current.load(indices, epoch)


class FeatureSource:
    """Features of a frozen body, one tensor per view of the same images (view 0: the centre
    crop); ``load`` serves view 0, ``stacked`` all of them for fitting the head."""

    def __init__(self, views: Sequence[torch.Tensor], labels: torch.Tensor, accel: Accelerator) -> None:
        self.views, self.labels, self.accel = list(views), labels, accel

    def stacked(self) -> Batch:
        """Every view's features, view after view, as float32 on the device, and their labels."""
        features = torch.cat(self.views).to(self.accel.device, torch.float32)
        return features, self.labels.repeat(len(self.views)).to(self.accel.device)

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, indices: torch.Tensor, epoch: int) -> Batch:
        return self.accel.to_device(self.views[0][indices]), self.labels[indices].to(self.accel.device)


def embed(
    engine: Engine,
    source: ImageSource,
    batch_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> Batch:
    """The body's output for every image of ``source``, in order, and the labels, on the CPU.

    Kept in the dtype the engine produced (bf16 halves the cache) until the head reads it, and
    on the device until the pass ends: one copy to the host, not one per batch.
    ``progress(done, total)`` hears of each batch.
    """
    outputs, labels = [], []
    for indices in torch.arange(len(source)).split(batch_size):
        inputs, batch_labels = source.load(indices, epoch=0)
        outputs.append(engine(inputs, pad_to=batch_size)[0])
        labels.append(batch_labels)
        if progress:
            progress(int(indices[-1]) + 1, len(source))
    return torch.cat(outputs).cpu(), torch.cat(labels).cpu()


def feature_source(
    engine: Engine,
    images: ImageSource,
    views: int,
    batch_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> FeatureSource:
    """Run the frozen body (``engine``) once per image and view: view 0 is the centre crop, each
    further view a new draw of ``images``' augmentation. ``progress(done, total)`` counts images
    over all views."""
    count = len(images)
    passes = [images.centred()] + [images] * (views - 1)

    def view_progress(view: int) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        return lambda done, _total: progress(view * count + done, views * count)

    cached = [embed(engine, source, batch_size, view_progress(v)) for v, source in enumerate(passes)]
    return FeatureSource([features for features, _ in cached], cached[0][1], images.accel)
