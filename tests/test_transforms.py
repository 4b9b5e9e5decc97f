"""Model inputs from cached uint8 squares: centre crop for evaluation, augmentation for training."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import functional as TF

from core.models.preprocess import Preprocess
from core.training.plan import AUGMENTATIONS
from core.training.transforms import to_model_input

PRE = Preprocess(resize=20, crop=16)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def batch(n: int = 8, size: int = 20, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def pixels(inputs: torch.Tensor, pre: Preprocess = PRE) -> torch.Tensor:
    """Undo the normalisation, back to 0..255."""
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    return (inputs.cpu() * std + mean) * 255


def windows(image: torch.Tensor, crop: int) -> list[torch.Tensor]:
    size = image.shape[-1]
    return [
        image[:, y : y + crop, x : x + crop] for y in range(size - crop + 1) for x in range(size - crop + 1)
    ]


def matches_some_window(output: torch.Tensor, image: torch.Tensor, crop: int) -> bool:
    return any(torch.allclose(output, window.float(), atol=1e-3) for window in windows(image, crop))


@pytest.mark.parametrize("device", DEVICES)
def test_evaluation_is_torchvision_centre_crop_and_normalise(device: str) -> None:
    images = batch()
    inputs = to_model_input(images.to(device), PRE, train=False)
    expected = TF.normalize(TF.center_crop(images, [16, 16]).float() / 255, PRE.mean, PRE.std)
    assert inputs.dtype == torch.float32 and inputs.device.type == device
    assert torch.allclose(inputs.cpu(), expected, atol=1e-5)


def test_an_odd_margin_rounds_like_torchvision() -> None:
    pre = Preprocess(resize=21, crop=16)
    images = batch(size=21)
    expected = TF.normalize(TF.center_crop(images, [16, 16]).float() / 255, pre.mean, pre.std)
    assert torch.allclose(to_model_input(images, pre, train=False), expected, atol=1e-5)


def test_training_without_augmentation_takes_random_crops() -> None:
    images = batch(n=16)
    outputs = pixels(to_model_input(images, PRE, train=True, augment="none"))
    assert all(matches_some_window(out, image, 16) for out, image in zip(outputs, images))
    centre = pixels(to_model_input(images, PRE, train=False))
    assert not torch.allclose(outputs, centre, atol=1e-3)  # 16 images, 25 places each: not all central


def test_light_augmentation_adds_horizontal_flips() -> None:
    images = batch(n=32)
    outputs = pixels(
        to_model_input(images, PRE, train=True, augment="light", generator=torch.Generator().manual_seed(1))
    )
    plain = [matches_some_window(out, image, 16) for out, image in zip(outputs, images)]
    mirrored = [matches_some_window(out.flip(-1), image, 16) for out, image in zip(outputs, images)]
    assert all(p or m for p, m in zip(plain, mirrored))
    assert 0 < sum(mirrored) < len(images)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_strong_augmentation_stays_in_range_and_changes_the_image(device: str, interpolation: str) -> None:
    pre = Preprocess(20, 16, interpolation=interpolation)
    images = batch(n=16).to(device)
    inputs = to_model_input(images, pre, train=True, augment="strong")
    assert inputs.shape == (16, 3, 16, 16) and inputs.device.type == device
    restored = pixels(inputs, pre)
    assert restored.min() > -1e-3 and restored.max() < 255 + 1e-3
    assert not torch.allclose(inputs, to_model_input(images, pre, train=False), atol=0.1)


@pytest.mark.parametrize("augment", AUGMENTATIONS)
def test_a_seeded_generator_repeats_the_augmentation(augment: str) -> None:
    images = batch()

    def run(seed: int) -> torch.Tensor:
        return to_model_input(
            images, PRE, train=True, augment=augment, generator=torch.Generator().manual_seed(seed)
        )

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_images_of_the_wrong_size_name_the_fix() -> None:
    with pytest.raises(ValueError, match="build the ImageCache with size=20"):
        to_model_input(batch(size=24), PRE, train=False)


def test_float_images_are_refused() -> None:
    with pytest.raises(ValueError, match="expected uint8 images"):
        to_model_input(batch().float(), PRE, train=False)


def test_an_unknown_augmentation_names_the_choices() -> None:
    with pytest.raises(ValueError, match="choose one of: none, light, strong"):
        to_model_input(batch(), PRE, train=True, augment="heavy")
