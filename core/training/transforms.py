"""From cached uint8 squares to a backbone's input, on whatever device the batch is on.

The cache holds each image at ``pre.resize`` pixels square; cropping, flipping, rescaling and
colour changes happen here on the whole batch at once (on the GPU when training there), so the
CPU never decodes or augments per image per epoch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from core.models.preprocess import Preprocess
from core.training.plan import AUGMENTATIONS

# "strong": a random resized crop (torchvision's default area range (0.08, 1) is meant for
# ImageNet-sized data; small data sets lose too much of each image), flips, colour jitter.
STRONG_AREA = (0.25, 1.0)
STRONG_RATIO = (3 / 4, 4 / 3)
STRONG_JITTER = 0.4  # brightness, contrast and saturation factors drawn from 1 +/- this
GRID_MODES = ("bilinear", "bicubic", "nearest")
ANTIALIAS_MODES = ("bilinear", "bicubic")
RESIZE_CHUNK = 256  # images resized at once: bounds the float copy a large cache would need


def to_model_input(
    images: torch.Tensor,
    pre: Preprocess,
    *,
    train: bool,
    augment: str = "none",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """uint8 ``[N, 3, S, S]`` (``S == pre.resize``) to normalised float ``[N, 3, crop, crop]``.

    ``train=False`` takes the centre crop, exactly as ``pre`` describes. ``train=True`` takes a
    random crop for every preset (the resize/crop margin is the cheapest augmentation there is);
    ``light`` adds horizontal flips; ``strong`` replaces the crop with a random resized crop and
    adds flips and colour jitter. Random numbers come from ``generator`` (a CPU generator), so a
    seeded run augments identically on any device.
    """
    _check(images, pre, augment)
    if not train:
        top = round((pre.resize - pre.crop) / 2.0)  # torchvision's CenterCrop rounding
        pixels = images[:, :, top : top + pre.crop, top : top + pre.crop].float() / 255
    elif augment == "strong":
        pixels = _random_resized_crop(images.float() / 255, pre, generator)
        pixels = _colour_jitter(pixels, generator)
    else:
        pixels = _random_crop(images, pre.crop, flip=augment == "light", generator=generator).float() / 255
    return normalise(pixels, pre)


def resize_images(images: torch.Tensor, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """uint8 ``[N, 3, S, S]`` to uint8 ``[N, 3, size, size]``, antialiased as decoding resizes,
    a chunk at a time."""
    mode = interpolation if interpolation in ANTIALIAS_MODES else "bilinear"
    resized = torch.empty((len(images), 3, size, size), dtype=torch.uint8, device=images.device)
    for start in range(0, len(images), RESIZE_CHUNK):
        chunk = images[start : start + RESIZE_CHUNK].float()
        chunk = F.interpolate(chunk, size=(size, size), mode=mode, antialias=True, align_corners=False)
        resized[start : start + RESIZE_CHUNK] = chunk.round_().clamp_(0, 255)
    return resized


def normalise(pixels: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    mean = torch.tensor(pre.mean, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
    return (pixels - mean) / std


def _check(images: torch.Tensor, pre: Preprocess, augment: str) -> None:
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augment!r}; choose one of: {', '.join(AUGMENTATIONS)}")
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 images [N, 3, S, S], got {images.dtype} {list(images.shape)}")
    if images.shape[2] != pre.resize or images.shape[3] != pre.resize:
        raise ValueError(
            f"images are {images.shape[2]}x{images.shape[3]} but the preprocessing expects "
            f"{pre.resize}x{pre.resize}: build the ImageCache with size={pre.resize}"
        )


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _random_crop(
    images: torch.Tensor, crop: int, *, flip: bool, generator: torch.Generator | None
) -> torch.Tensor:
    """A ``crop`` square at a random place in each image (mirrored at random when ``flip``)."""
    n, channels, size, _ = images.shape
    steps = torch.arange(crop)
    rows = torch.randint(0, size - crop + 1, (n, 1), generator=generator) + steps
    cols = torch.randint(0, size - crop + 1, (n, 1), generator=generator) + steps
    if flip:
        mirrored = torch.rand(n, 1, generator=generator) < 0.5
        cols = torch.where(mirrored, cols.flip(1), cols)
    rows, cols = rows.to(images.device), cols.to(images.device)
    picked = images.gather(2, rows.view(n, 1, crop, 1).expand(n, channels, crop, size))
    return picked.gather(3, cols.view(n, 1, 1, crop).expand(n, channels, crop, crop))


def _random_resized_crop(
    pixels: torch.Tensor, pre: Preprocess, generator: torch.Generator | None
) -> torch.Tensor:
    """A random region (area and aspect ratio drawn per image) resampled to ``pre.crop``, half of
    them mirrored: one ``grid_sample`` for the whole batch."""
    n = pixels.shape[0]
    area = _uniform(n, *STRONG_AREA, generator)
    ratio = torch.exp(_uniform(n, math.log(STRONG_RATIO[0]), math.log(STRONG_RATIO[1]), generator))
    # Region width and height as fractions of the image, then its centre in [-1, 1] coordinates.
    width = torch.sqrt(area * ratio).clamp(max=1.0)
    height = torch.sqrt(area / ratio).clamp(max=1.0)
    centre_x = (1 - width) * (2 * torch.rand(n, generator=generator) - 1)
    centre_y = (1 - height) * (2 * torch.rand(n, generator=generator) - 1)
    mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = width * mirror
    theta[:, 0, 2] = centre_x
    theta[:, 1, 1] = height
    theta[:, 1, 2] = centre_y
    theta = theta.to(device=pixels.device, dtype=pixels.dtype)
    grid = F.affine_grid(theta, [n, 3, pre.crop, pre.crop], align_corners=False)
    mode = pre.interpolation if pre.interpolation in GRID_MODES else "bilinear"
    resampled = F.grid_sample(pixels, grid, mode=mode, padding_mode="reflection", align_corners=False)
    return resampled.clamp(0, 1)  # bicubic overshoots


def _colour_jitter(pixels: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Brightness, contrast and saturation, each scaled by its own random factor per image."""
    n = pixels.shape[0]
    low, high = 1 - STRONG_JITTER, 1 + STRONG_JITTER
    brightness, contrast, saturation = (
        _uniform(n, low, high, generator).to(pixels.device, pixels.dtype).view(n, 1, 1, 1) for _ in range(3)
    )
    pixels = (pixels * brightness).clamp(0, 1)
    mean_grey = _luma(pixels).mean(dim=(2, 3), keepdim=True)
    pixels = ((pixels - mean_grey) * contrast + mean_grey).clamp(0, 1)
    grey = _luma(pixels)
    return ((pixels - grey) * saturation + grey).clamp(0, 1)


def _luma(pixels: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=pixels.dtype, device=pixels.device)
    return (pixels * weights.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
