"""Advice measured from the images: LogME, the BatchNorm shift, similarity, ranking and the cut."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from core.analysis import AnalysisPlan, analyse
from core.analysis.analyse import stratified_sample
from core.analysis.cut import choose_cut
from core.analysis.logme import Spectrum, fit, log_evidence, logme
from core.analysis.probe import Candidate, probe
from core.analysis.ranking import Ranked, rank
from core.analysis.scores import Score, Separability, separability
from core.analysis.shift import Moments, grid_moments
from core.analysis.similarity import measure
from core.data import ImageCache, ingest
from core.data.samples import sample_path
from core.models.backbones import StageFact, resolve
from core.training.device import accelerator


def brute_force_evidence(features: torch.Tensor, y: torch.Tensor, alpha: float, beta: float) -> float:
    """log N(y; 0, F F^T / alpha + I / beta) per sample: the marginal likelihood LogME maximises."""
    n = len(y)
    cov = features @ features.T / alpha + torch.eye(n, dtype=torch.float64) / beta
    normal = torch.distributions.MultivariateNormal(torch.zeros(n, dtype=torch.float64), cov)
    return float(normal.log_prob(y)) / n


def test_logme_evidence_matches_a_hand_computed_example() -> None:
    # F = [[1], [1]], y = [1, 1], alpha = beta = 1: C = [[2, 1], [1, 2]], det 3, y'C^-1 y = 2/3.
    features, y = torch.ones(2, 1, dtype=torch.float64), torch.ones(2, 1, dtype=torch.float64)
    by_hand = (-math.log(2 * math.pi) - 0.5 * math.log(3) - 1 / 3) / 2
    one = torch.ones(1, dtype=torch.float64)

    assert float(log_evidence(Spectrum.of(features), y, one, one)) == pytest.approx(by_hand, abs=1e-12)


@pytest.mark.parametrize(("n", "d"), [(30, 50), (80, 10)])
def test_logme_maximises_the_brute_force_evidence(n: int, d: int) -> None:
    generator = torch.Generator().manual_seed(n)
    features = torch.randn(n, d, dtype=torch.float64, generator=generator)
    y = (features[:, 0] + 0.5 * torch.randn(n, dtype=torch.float64, generator=generator) > 0).double()
    spectrum = Spectrum.of(features)
    alpha, beta = (float(v) for v in fit(spectrum, y.view(-1, 1)))

    best = brute_force_evidence(features, y, alpha, beta)

    closed_form = log_evidence(
        spectrum,
        y.view(-1, 1),
        torch.tensor([alpha], dtype=torch.float64),
        torch.tensor([beta], dtype=torch.float64),
    )
    assert float(closed_form) == pytest.approx(best, abs=1e-9)
    for a, b in [(alpha * 1.2, beta), (alpha / 1.2, beta), (alpha, beta * 1.2), (alpha, beta / 1.2)]:
        assert brute_force_evidence(features, y, a, b) < best


def test_logme_prefers_features_that_carry_the_labels() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    noise = torch.randn(60, 16, generator=generator)
    informative = noise.clone()
    informative[:, :3] += 3 * nn.functional.one_hot(labels, 3)

    assert logme(informative, labels) > logme(noise, labels) + 0.3


def test_the_batchnorm_shift_is_near_zero_on_matching_inputs_and_large_on_shifted_ones() -> None:
    layer = nn.BatchNorm2d(8).eval()
    layer.running_mean.copy_(torch.linspace(-1, 1, 8))
    layer.running_var.copy_(torch.linspace(0.5, 2, 8))
    generator = torch.Generator().manual_seed(0)
    matching = layer.running_mean.view(1, 8, 1, 1) + layer.running_var.sqrt().view(1, 8, 1, 1) * torch.randn(
        64, 8, 16, 16, generator=generator
    )
    shifted = matching + 2 * layer.running_var.sqrt().view(1, 8, 1, 1)  # two standard deviations off

    def shift(inputs: torch.Tensor) -> float:
        return Moments.of(layer, grid_moments(inputs).sum(dim=0), len(inputs)).shift()

    # Symmetric KL of equal variances two standard deviations apart: (1/2) 4 (1 + 1) = 4.
    assert shift(matching) < 0.01
    assert shift(shifted) == pytest.approx(4.0, rel=0.05)


def photo_crops(folder: Path, per_class: int = 8) -> Path:
    """Crops of two of scikit-image's photographs, a class each: natural images like ImageNet's."""
    import skimage.data

    rng = random.Random(0)
    for name in ("chelsea", "coffee"):
        picture = Image.fromarray(getattr(skimage.data, name)())
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            side = rng.randint(160, 300)
            left, top = rng.randint(0, picture.width - side), rng.randint(0, picture.height - side)
            picture.crop((left, top, left + side, top + side)).save(folder / name / f"{i}.jpg", quality=90)
    return folder


def similarity_of(source: Path, images: int = 16) -> float:
    dataset = ingest(source)
    candidate = Candidate(resolve("efficientnet_lite0"))
    samples = stratified_sample(dataset.train + dataset.val, images, seed=0)
    found = probe(candidate, ImageCache(samples, candidate.preprocess.resize), accelerator("cpu"))
    return measure(found.layer_shifts, found.logits, candidate.label)


def test_natural_photos_score_as_similar_and_digits_and_textures_as_different(tmp_path: Path) -> None:
    photos = similarity_of(photo_crops(tmp_path / "photos"))
    digits = similarity_of(sample_path("digits"))
    textures = similarity_of(sample_path("textures"))

    assert photos.verdict == "similar" and digits.verdict == "different" and textures.verdict == "different"
    assert photos.score > 0.7 and max(digits.score, textures.score) < 0.3
    # Different data moves the deep layers more than the middle ones.
    assert digits.shift_by_depth[-1] > digits.shift_by_depth[1]
    assert photos.top1_probability > digits.top1_probability


def test_a_random_init_network_scores_and_ranks_below_its_pretrained_twin(tmp_path: Path) -> None:
    dataset = ingest(photo_crops(tmp_path / "photos"))
    plan = AnalysisPlan(backbones=("efficientnet_lite0",), controls=("efficientnet_lite0",), sample=16)

    result = analyse(dataset, plan).to_dict()

    pretrained, control = result["backbone_ranking"]
    assert (pretrained["name"], control["name"]) == ("efficientnet_lite0", "efficientnet_lite0 (random init)")
    assert pretrained["logme"]["value"] > control["logme"]["value"]
    assert "too few for the evidence" in result["ranking_note"]
    assert result["verdict"] == "similar" and result["recommended_case"] == 1
    assert [s["index"] for s in result["stage_scores"]] == list(range(1, len(result["stage_scores"]) + 1))


def ranked(label: str, top1: float | None, logme_value: float, knn: float, width: float = 0.01) -> Ranked:
    scores = Separability(
        Score(logme_value, logme_value - width, logme_value + width), Score(knn, knn - width, knn + width)
    )
    return Ranked(label, label, top1 is not None, top1, scores, images_per_s=100.0)


def test_the_ranking_rule_falls_back_to_imagenet_top1_when_evidence_cannot_decide() -> None:
    few = [ranked("a", 70.0, 0.5, 0.9), ranked("b", 80.0, 0.1, 0.6), ranked("c", None, 0.05, 0.5)]
    assert [r.label for r in rank(few).entries] == ["b", "a", "c"]

    clear = [*few, ranked("d", 75.0, 0.2, 0.7)]
    ranking = rank(clear)
    assert ranking.by_evidence and ranking.entries[0].label == "a"

    blurred = [ranked(r.label, r.top1, r.scores.logme.value, r.scores.knn.value, width=1.0) for r in clear]
    ranking = rank(blurred)
    assert not ranking.by_evidence and [r.label for r in ranking.entries] == ["b", "d", "a", "c"]
    assert "does not separate" in ranking.note


def test_the_cut_is_the_stage_whose_features_carry_the_classes() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(48) % 4
    informative = (
        torch.randn(48, 12, generator=generator) + 4 * nn.functional.one_hot(labels, 12)[:, :12].float()
    )
    features = {
        "early": torch.randn(48, 8, generator=generator),
        "middle": informative,
        "late": torch.randn(48, 32, generator=generator),
    }
    facts = tuple(
        StageFact(i, path, features[path].shape[1], None, None, i / 3, count=3)
        for i, path in enumerate(features, 1)
    )

    choice = choose_cut("toy", facts, features, labels, 4)

    assert choice.best.path == "middle" and not choice.deepest_is_best
    features["late"] = (
        torch.randn(48, 32, generator=generator) + 8 * nn.functional.one_hot(labels, 32).float()
    )
    assert choose_cut("toy", facts, features, labels, 4).deepest_is_best
    assert "may not be as different" in choose_cut("toy", facts, features, labels, 4).note


def test_score_intervals_contain_the_whole_sample_value_and_are_reproducible() -> None:
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(40) % 2
    features = torch.randn(40, 6, generator=generator) + labels.view(-1, 1).float()

    first, again = separability(features, labels, 2, seed=3), separability(features, labels, 2, seed=3)

    assert first == again
    for score in (first.logme, first.knn):
        assert score.low <= score.value <= score.high
