"""Cases 1 and 2 fit their new layer to convergence, whatever the scale of the features."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from core.data.samples import sample_path
from core.training.head import HeadFit, Standardise, _stratified_folds, choose_weight_decay
from core.training.plan import Plan
from core.training.train import fit


def blobs(scale: float, per_class: int = 40, dims: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Three overlapping Gaussian classes, multiplied by ``scale`` (mid-network features are
    often far larger or smaller than the final ones)."""
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(3, dims, generator=generator)
    labels = torch.arange(3).repeat_interleave(per_class)
    features = centres[labels] + 1.5 * torch.randn(len(labels), dims, generator=generator)
    return features * scale, labels


def fitted_accuracy(features: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    torch.manual_seed(0)
    head = nn.Sequential(Standardise().fit(features), nn.Linear(features.shape[1], 3))
    fit = HeadFit(head, features, labels, weight_decay=1e-2)
    for epoch in range(1, 21):
        _, accuracy, converged = fit.step()
        if converged:
            return accuracy, epoch
    return accuracy, 20


def test_the_fit_converges_to_the_same_answer_at_any_feature_scale() -> None:
    small, labels = blobs(1e-3)
    large, _ = blobs(1e3)
    (small_accuracy, small_epochs), (large_accuracy, large_epochs) = (
        fitted_accuracy(small, labels),
        fitted_accuracy(large, labels),
    )
    assert small_accuracy == pytest.approx(large_accuracy) and small_accuracy > 0.9
    assert small_epochs < 20 and large_epochs < 20  # converged, not stopped by the epoch budget


def test_standardise_uses_each_feature_s_own_statistics() -> None:
    flat = torch.tensor([[1.0, 10.0], [3.0, 30.0]])
    assert torch.allclose(
        Standardise().fit(flat)(flat), torch.tensor([[-0.7071, -0.7071], [0.7071, 0.7071]]), atol=1e-4
    )
    maps = torch.randn(4, 3, 5, 5) * torch.tensor([1.0, 100.0, 0.01]).view(1, 3, 1, 1)
    standardised = Standardise().fit(maps)(maps)
    assert torch.allclose(standardised.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-4)  # per channel


def test_folds_are_stratified() -> None:
    labels = torch.tensor([0] * 10 + [1] * 5)
    folds = _stratified_folds(labels, 5, torch.Generator().manual_seed(0))
    for fold in range(5):
        assert ((folds == fold) & (labels == 0)).sum() == 2 and ((folds == fold) & (labels == 1)).sum() == 1


def test_cross_validation_keeps_an_image_s_views_together() -> None:
    """Two views of each image where the second is a copy of the first: if a copy of a held-out
    image were in the training folds, the weakest penalty would look perfect and win."""
    features, labels = blobs(1.0, per_class=20)
    noise = torch.randn(features.shape, generator=torch.Generator().manual_seed(1)) * 30  # unlearnable
    views, view_labels = torch.cat([noise, noise]), torch.cat([labels, labels])
    head = nn.Sequential(Standardise().fit(views), nn.Linear(64, 3))
    choice = choose_weight_decay(head, views, view_labels, images=len(labels))
    assert max(choice.accuracy.values()) < 0.6  # chance is 1/3; memorised copies would score 1.0


def four_digits(root: Path, per_class: int = 60) -> Path:
    """The bundled digits 0 to 3, ``per_class`` of each: small, and far from ImageNet."""
    with zipfile.ZipFile(sample_path("digits")) as archive:
        for name in sorted(archive.namelist()):
            label = name.split("/")[0]
            if label in "0123" and len(list((root / label).glob("*.png"))) < per_class:
                (root / label).mkdir(parents=True, exist_ok=True)
                (root / name).write_bytes(archive.read(name))
    return root


def test_case_2_at_the_default_cut_learns_small_different_data_with_default_settings(
    lab_home: Path, tmp_path: Path
) -> None:
    """The advice for 240 handwritten digits is case 2: with every setting at its default it must
    work, and about as well as case 1 (it scored 20.8% after 3 epochs before the head was fitted)."""
    data = four_digits(tmp_path / "digits")
    accuracy = {
        case: fit(
            Plan(data=str(data), backbone="efficientnet_lite0", case=case),
            tmp_path / f"case{case}",
            lambda e: None,
        )["best_val_accuracy"]
        for case in (1, 2)
    }
    assert accuracy[2] >= 0.9, accuracy
    assert accuracy[2] >= accuracy[1] - 0.05, accuracy
