"""Advice measured from the images: LogME, the BatchNorm shift, similarity, ranking and the cut."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from core.analysis.analyse import AnalysisPlan, analyse, stratified_sample
from core.analysis.curve import CurvePoint, LearningCurve, learning_curve, measured_size
from core.analysis.cut import choose_cut
from core.analysis.logme import Spectrum, fit, log_evidence, logme
from core.analysis.probe import Candidate, Probe, probe
from core.analysis.ranking import Ranked, rank
from core.analysis.record import AnalysisRecord
from core.analysis.scores import Score, Separability, separability
from core.analysis.shift import Moments, ShiftType, depth_profile, grid_moments, shift_type
from core.analysis.similarity import Similarity, measure
from core.data import ImageCache, ingest
from core.data.samples import sample_path
from core.models.backbones import StageFact, resolve
from core.training.device import accelerator
from core.training.head import HeadScore


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


def probed(source: Path, images: int = 16) -> Probe:
    dataset = ingest(source)
    candidate = Candidate(resolve("efficientnet_lite0"))
    samples = stratified_sample(dataset.train + dataset.val, images, seed=0)
    return probe(candidate, ImageCache(samples, candidate.preprocess.resize), accelerator("cpu"))


def similarity_of(source: Path) -> Similarity:
    found = probed(source)
    return measure(found.layer_shifts, found.logits, found.candidate.label)


def shift_of(source: Path) -> ShiftType:
    return shift_type(depth_profile(probed(source).layer_tails))


def test_natural_photos_score_as_similar_and_digits_and_textures_as_different(tmp_path: Path) -> None:
    photos = similarity_of(photo_crops(tmp_path / "photos"))
    digits = similarity_of(sample_path("digits"))
    textures = similarity_of(sample_path("textures"))

    assert photos.answer == "similar" and digits.answer == "different" and textures.answer == "different"
    assert photos.score > 0.7 and max(digits.score, textures.score) < 0.3
    # Different data moves the deep layers more than the middle ones.
    assert digits.shift_by_depth[-1] > digits.shift_by_depth[1]
    assert photos.top1_probability > digits.top1_probability


def test_a_random_init_network_scores_and_ranks_below_its_pretrained_twin(tmp_path: Path) -> None:
    dataset = ingest(photo_crops(tmp_path / "photos"))
    plan = AnalysisPlan(backbones=("efficientnet_lite0",), controls=("efficientnet_lite0",), sample=16)

    analysis = analyse(dataset, plan)
    result = analysis.to_dict()

    # The stored JSON reads back into the very record the writer built.
    assert AnalysisRecord.from_dict(json.loads(json.dumps(result))) == analysis.to_record()
    pretrained, control = result["backbone_ranking"]
    assert (pretrained["name"], control["name"]) == ("efficientnet_lite0", "efficientnet_lite0 (random init)")
    assert pretrained["logme"]["value"] > control["logme"]["value"]
    assert "too few for the evidence" in result["ranking_note"]
    assert result["verdict"] == "similar" and result["recommended_case"] == 1
    *stages, whole_body = result["stage_scores"]
    assert [s["index"] for s in stages] == list(range(1, len(stages) + 1))
    assert whole_body["stage"] == "whole body" and whole_body["case"] == 1


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


def carrying(labels: torch.Tensor, width: int, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Features of ``width`` whose first dimensions say the label with ``strength`` against unit noise."""
    signal = strength * nn.functional.one_hot(labels, width).float()
    return torch.randn(len(labels), width, generator=generator) + signal


def toy_stages(count: int) -> tuple[StageFact, ...]:
    return tuple(
        StageFact(i, f"stage{i}", 16, None, None, i / count, count=count) for i in range(1, count + 1)
    )


def test_the_plan_is_case_2_at_the_middle_stage_only_when_it_beats_the_whole_body() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(80) % 4
    facts = toy_stages(3)
    features = {
        "stage1": torch.randn(80, 16, generator=generator),
        "stage2": carrying(labels, 16, 4.0, generator),
        "stage3": torch.randn(80, 16, generator=generator),
    }
    noise = torch.randn(80, 32, generator=generator)

    middle = choose_cut("toy", facts, features, noise, labels, 4)

    assert middle.case == 2 and middle.best.path == "stage2"
    assert "so cut there" in middle.note and "after stage 2 of 3" in middle.note
    assert middle.cut_score.head.accuracy > 0.9 and middle.whole_body.head.accuracy < 0.5

    deepest = choose_cut("toy", facts, features, carrying(labels, 32, 6.0, generator), labels, 4)

    assert deepest.case == 1 and deepest.best.path == "stage2"  # case 2's cut, should anyone race it
    assert "so keep them all" in deepest.note
    # Every fold at 100%: the interval that rounds to the value itself is not repeated.
    assert deepest.whole_body.head.low > 0.995 and "scores 100% on the whole body" in deepest.note


def test_the_plan_never_cuts_at_the_last_stage() -> None:
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(60) % 3
    facts = toy_stages(3)
    features = {
        "stage1": torch.randn(60, 16, generator=generator),
        "stage2": torch.randn(60, 16, generator=generator),
        "stage3": carrying(labels, 16, 4.0, generator),  # the last stage, better than the whole body
    }

    choice = choose_cut("toy", facts, features, carrying(labels, 32, 1.5, generator), labels, 3)

    assert choice.case == 1 and choice.best.path != "stage3"


def test_a_learning_curve_on_a_task_that_saturates_reads_flat_and_the_size_small() -> None:
    generator = torch.Generator().manual_seed(2)
    labels = torch.arange(120) % 3

    curve = learning_curve(carrying(labels, 8, 6.0, generator), labels, 3)

    assert [p.images for p in curve.points] == [30, 60, 120]
    assert curve.shape == "flat" and curve.points[-1].head.accuracy > 0.95
    size = measured_size(curve, images=50_000, classes=3, dividing_line=10_000)
    assert size.size == "small" and "frozen features have what there is" in size.reason


def test_the_size_rule_counts_when_the_curve_cannot_tell_and_measures_when_it_can() -> None:
    head = HeadScore(0.6, (0.6, 0.6))
    rising = LearningCurve(tuple(CurvePoint(f, n, HeadScore(a, (a, a))) for f, n, a in
                                 [(0.25, 50, 0.4), (0.5, 100, 0.55), (1.0, 200, 0.7)]))  # fmt: skip

    assert rising.shape == "rising" and rising.per_doubling == pytest.approx(0.15)
    assert measured_size(rising, 6_000, 5, 10_000).size == "large"  # 1,200 per class, still learning
    assert measured_size(rising, 6_000, 60, 10_000).size == "small"  # the count decides: 100 per class
    assert measured_size(LearningCurve(()), 20_000, 10, 10_000).size == "large"  # no curve: the count
    assert measured_size(LearningCurve((CurvePoint(1.0, 200, head),)), 20_000, 10, 10_000).size == "large"
    few = measured_size(rising, 20_000, 2_000, 10_000)
    assert few.size == "small" and "10 images per class" in few.reason


def test_a_grey_scaled_copy_of_natural_photos_reads_as_an_input_level_shift(tmp_path: Path) -> None:
    photos = photo_crops(tmp_path / "photos")
    grey = tmp_path / "grey"
    for image in photos.rglob("*.jpg"):
        (grey / image.parent.name).mkdir(parents=True, exist_ok=True)
        Image.open(image).convert("L").convert("RGB").save(grey / image.parent.name / image.name)

    colour, greyed = shift_of(photos), shift_of(grey)

    assert greyed.kind == "input" and "low-level look" in greyed.words
    # Grey scale stands out in the first layers, many times more than the photos' own look does.
    assert greyed.spike > 5 * colour.spike and greyed.trend < colour.trend


def test_score_intervals_contain_the_whole_sample_value_and_are_reproducible() -> None:
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(40) % 2
    features = torch.randn(40, 6, generator=generator) + labels.view(-1, 1).float()

    first, again = separability(features, labels, 2, seed=3), separability(features, labels, 2, seed=3)

    assert first == again
    for score in (first.logme, first.knn):
        assert score.low <= score.value <= score.high
