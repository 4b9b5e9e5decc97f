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
from core.training.transforms import to_model_input


class ImageSource:
    """Model inputs made on the device from a cache of resized uint8 images."""

    def __init__(
        self,
        cache: ImageCache,
        pre: Preprocess,
        accel: Accelerator,
        *,
        train: bool,
        augment: str = "none",
        seed: int = 0,
    ) -> None:
        self.cache, self.pre, self.accel = cache, pre, accel
        self.train, self.augment = train, augment
        # Augmentation draws from its own CPU generator: a seeded run augments alike on any device.
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.cache)

    def centred(self) -> ImageSource:
        """The same images as validation sees them: the centre crop, no augmentation."""
        return ImageSource(self.cache, self.pre, self.accel, train=False)

    def load(self, indices: torch.Tensor, epoch: int) -> Batch:
        pixels, labels = self.cache.images[indices], self.cache.labels[indices]
        if self.accel.pin_memory:
            pixels, labels = pixels.pin_memory(), labels.pin_memory()
        device, non_blocking = self.accel.device, self.accel.pin_memory
        # Augment on the device, from uint8 that travels four times lighter than floats.
        pixels = pixels.to(device, non_blocking=non_blocking)
        inputs = to_model_input(
            pixels, self.pre, train=self.train, augment=self.augment, generator=self.generator
        )
        return self.accel.to_device(inputs), labels.to(device, non_blocking=non_blocking)


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
