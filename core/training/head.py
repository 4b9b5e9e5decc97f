"""The new layer of cases 1 and 2, fitted to convergence on features computed once.

A frozen body's features are fixed, so training the new layer is a small convex problem (a
multinomial logistic regression for a linear head) that can simply be solved. Solving it beats
running an optimiser for a few hundred steps at a guessed learning rate: features from the middle
of a network (case 2) sit on another scale than the final ones (case 1), and a step size that
converges on one stalls on the other (a 4-class digits run at the default cut scored 50% after 10
epochs of AdamW at 1e-3, while a probe on the same features scored 100%). So:

- inputs are standardised with the training features' mean and spread, kept in the model as a
  ``Standardise`` layer (exported with it, so predictions see the same numbers);
- the weights are fitted by full-batch L-BFGS on the cross-entropy (class-weighted when the run
  weighs classes) plus an L2 penalty;
- the penalty's strength is chosen by k-fold cross-validation on the training split, never on
  the validation split, whose accuracy is the one reported.

"Epochs" remain, so that curves and early stopping mean what they mean elsewhere: each is a few
L-BFGS iterations on all the training features.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

# Candidate L2 strengths, on the mean loss over standardised inputs (scikit-learn's C = 1 / (n * λ)).
WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2, 1e-1)
FOLDS = 5
CV_ITERATIONS = 100  # enough for these problems to converge; the fits race each other, not the clock
CV_MAX_IMAGES = 4_000  # past this, folds of a seeded subsample choose about as well, much faster
INTERVAL_ERRORS = 2.0  # a held-out accuracy's interval, either side of the mean over the folds
JOINT_ITERATIONS = CV_ITERATIONS  # every fold and penalty of a cross-validation at once (head_accuracy)
EPOCH_ITERATIONS = 20
CONVERGED = 1e-6  # relative change of the objective over an epoch below which the fit is done
# What the estimate assumes: evaluations of the objective in a whole cross-validation (measured
# 355-1235 on the bundled samples and the benchmark's photos) and in an epoch of the final fit
# (20-25), and the optimiser's own cost per evaluation.
CV_EVALUATIONS = 1000
EPOCH_EVALUATIONS = 25
EVALUATION_OVERHEAD_S = 0.0005


class Standardise(nn.Module):
    """``(x - mean) / std`` per feature (per channel for feature maps), with the training
    features' statistics as buffers, so that the exported model standardises by itself."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(1))
        self.register_buffer("std", torch.ones(1))

    def fit(self, features: torch.Tensor) -> Standardise:
        dims = [d for d in range(features.dim()) if d != 1]
        self.mean = features.mean(dims).to(self.mean.device)
        self.std = features.std(dims).clamp_min(1e-6).to(self.std.device)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = [1, -1] + [1] * (x.dim() - 2)
        return (x - self.mean.view(shape)) / self.std.view(shape)


@dataclass(frozen=True)
class Choice:
    """The penalty that cross-validation chose, what each candidate scored, and the chosen
    penalty's out-of-fold probabilities: each training image's, from the fit that did not see it
    (the evidence ``core.training.suspects`` weighs labels with; NaN rows for images outside
    the cross-validated subsample, None when nothing could be folded)."""

    weight_decay: float
    folds: int
    accuracy: dict[float, float]  # mean held-out accuracy per candidate
    held_out: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {
            "method": "L-BFGS on standardised features",
            "weight_decay": self.weight_decay,
            "folds": self.folds,
            "cv_accuracy": {f"{wd:g}": round(acc, 4) for wd, acc in self.accuracy.items()},
        }


class HeadFit:
    """L-BFGS on all of ``features`` at once, one epoch of iterations at a time."""

    def __init__(
        self,
        head: nn.Module,
        features: torch.Tensor,
        labels: torch.Tensor,
        weight_decay: float,
        class_weights: torch.Tensor | None = None,
        iterations: int = EPOCH_ITERATIONS,
    ) -> None:
        self.head, self.features, self.labels = head, features, labels
        self.weight_decay, self.class_weights = weight_decay, class_weights
        self.optimizer = torch.optim.LBFGS(
            [p for p in head.parameters() if p.requires_grad],
            lr=1.0,
            max_iter=iterations,
            history_size=20,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-6,
            tolerance_change=1e-9,
        )

    def objective(self) -> torch.Tensor:
        """Mean cross-entropy plus ``weight_decay / 2`` times the squared weights (not biases)."""
        logits = self.head(self.features)
        loss = F.cross_entropy(logits, self.labels, weight=self.class_weights)
        weights = [p for name, p in self.head.named_parameters() if name.endswith("weight")]
        return loss + 0.5 * self.weight_decay * sum(w.pow(2).sum() for w in weights)

    def step(self) -> tuple[float, float, bool]:
        """Run one epoch of iterations; return the training loss and accuracy after it, and
        whether the fit has converged (the objective no longer moves)."""
        self.head.train()

        def closure() -> torch.Tensor:
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.objective()
            loss.backward()
            return loss

        before = self.optimizer.step(closure).item()
        self.head.eval()
        with torch.no_grad():
            after = float(self.objective())
            logits = self.head(self.features)
            loss = float(F.cross_entropy(logits, self.labels, weight=self.class_weights))
            accuracy = float((logits.argmax(1) == self.labels).double().mean())
        return loss, accuracy, abs(before - after) <= CONVERGED * max(1.0, abs(before))


def choose_weight_decay(
    head: nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor,
    images: int,
    class_weights: torch.Tensor | None = None,
    seed: int = 0,
) -> Choice:
    """The candidate penalty with the best mean held-out accuracy over stratified folds of the
    training images (ties: the stronger penalty, the safer choice on small data).

    ``features`` holds ``len(features) // images`` views of the same ``images`` images, view by
    view: every view of an image falls in the same fold, or the held-out scores would flatter.
    """
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(images, generator=generator)[:CV_MAX_IMAGES]
    folded = _fold_accuracies(head, features, labels, chosen, images, class_weights, generator)
    if folded is None:
        return Choice(weight_decay=WEIGHT_DECAYS[len(WEIGHT_DECAYS) // 2], folds=0, accuracy={})
    scores, probabilities = folded
    accuracy = {weight_decay: sum(values) / len(values) for weight_decay, values in scores.items()}
    best = _best(accuracy)
    return Choice(best, len(scores[best]), accuracy, probabilities[best])


@dataclass(frozen=True)
class HeadScore:
    """The held-out accuracy of the solved new layer on frozen features: the mean over the folds
    at the penalty cross-validation chose, and each fold's (their spread gives the interval)."""

    accuracy: float
    per_fold: tuple[float, ...]

    @property
    def spread(self) -> float:
        """The standard error of the mean over the folds (0 with one fold)."""
        return _standard_error(self.per_fold)

    @property
    def low(self) -> float:
        """The interval's floor: ``INTERVAL_ERRORS`` standard errors below the mean."""
        return max(0.0, self.accuracy - INTERVAL_ERRORS * self.spread)

    @property
    def high(self) -> float:
        return min(1.0, self.accuracy + INTERVAL_ERRORS * self.spread)


def head_accuracy(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    groups: torch.Tensor | None = None,
    seed: int = 0,
) -> HeadScore | None:
    """Cross-validate the new layer the engine trains for cases 1 and 2 on ``features`` [n, d]:
    standardised inputs, a linear layer solved to convergence, its penalty the best of
    ``WEIGHT_DECAYS`` on the folds.

    Images sharing a ``groups`` value fall in the same fold (an identical file on both sides
    would flatter the score). The same ``labels``, ``groups`` and ``seed`` give the same folds,
    so scores of different feature sets pair up fold by fold. None when a class has fewer than
    two images (no fold could hold it out).
    """
    folds = min(FOLDS, int(labels.unique(return_counts=True)[1].min()))
    if folds < 2:
        return None
    generator = torch.Generator().manual_seed(seed)
    fold_of = _stratified_folds(labels, folds, generator, groups)
    accuracy = _solved_folds(
        Standardise().fit(features.float())(features.float()), labels, num_classes, fold_of
    )
    means = {wd: float(row.mean()) for wd, row in zip(WEIGHT_DECAYS, accuracy, strict=True)}
    chosen = _best(means)
    return HeadScore(means[chosen], tuple(accuracy[WEIGHT_DECAYS.index(chosen)].tolist()))


def _solved_folds(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, fold_of: torch.Tensor
) -> torch.Tensor:
    """Held-out accuracy ``[len(WEIGHT_DECAYS), folds]`` of the penalised linear layer fitted on
    every fold's training rows with every candidate penalty.

    All of these convex problems are solved at once by one L-BFGS on their summed objectives
    (independent, so the joint optimum is each one's), in the span of the features' rows: an
    L2-penalised linear layer's weights lie in the span of its training rows (the representer
    theorem), so wide features (1,280 channels, 200 images) lose nothing projected onto it, and
    the problems cost what 200 features would.
    """
    u, s, _ = torch.linalg.svd(features.double(), full_matrices=False)
    rows = (u * s).float()
    folds = int(fold_of.max()) + 1
    decays = torch.tensor(WEIGHT_DECAYS).repeat_interleave(folds)
    train = fold_of.view(1, -1) != torch.arange(folds).repeat(len(WEIGHT_DECAYS)).view(-1, 1)
    share = train.float() / train.sum(dim=1, keepdim=True)
    weight = torch.zeros(len(decays), rows.shape[1], num_classes, requires_grad=True)
    bias = torch.zeros(len(decays), 1, num_classes, requires_grad=True)
    targets = labels.repeat(len(decays))
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=JOINT_ITERATIONS, history_size=20, line_search_fn="strong_wolfe",
        tolerance_grad=1e-6, tolerance_change=1e-9,
    )  # fmt: skip

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        logits = torch.einsum("nd,pdc->pnc", rows, weight) + bias
        losses = F.cross_entropy(logits.reshape(-1, num_classes), targets, reduction="none")
        data = (losses.view(len(decays), -1) * share).sum(dim=1)
        loss = (data + 0.5 * decays * weight.pow(2).sum(dim=(1, 2))).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        predicted = (torch.einsum("nd,pdc->pnc", rows, weight) + bias).argmax(dim=2)
    held = ~train
    accuracy = ((predicted == labels) & held).sum(dim=1) / held.sum(dim=1)
    return accuracy.double().view(len(WEIGHT_DECAYS), folds)


def _fold_accuracies(
    head: nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor,
    chosen: torch.Tensor,
    images: int,
    class_weights: torch.Tensor | None,
    generator: torch.Generator,
) -> tuple[dict[float, list[float]], dict[float, torch.Tensor]] | None:
    """Each candidate penalty's held-out accuracy per fold of the ``chosen`` images, and its
    held-out probabilities ``[images, classes]`` (NaN outside ``chosen``); None when the
    smallest class is too small to fold."""
    views = len(features) // images
    image_labels = labels[:images]
    smallest = int(torch.bincount(image_labels[chosen]).min()) if len(chosen) else 0
    folds = min(FOLDS, smallest)
    if folds < 2:
        return None
    fold_of = _stratified_folds(image_labels[chosen], folds, generator)
    scores: dict[float, list[float]] = {weight_decay: [] for weight_decay in WEIGHT_DECAYS}
    probabilities: dict[float, torch.Tensor] = {}
    for fold in range(folds):
        held, kept = chosen[fold_of == fold], chosen[fold_of != fold]
        rows = torch.cat([kept + v * images for v in range(views)])  # every view of the kept images
        candidate = copy.deepcopy(head)
        # Strongest penalty first, each fit starting from the last one's weights: a
        # regularisation path converges in a fraction of the iterations of cold starts.
        for weight_decay in sorted(WEIGHT_DECAYS, reverse=True):
            HeadFit(
                candidate, features[rows], labels[rows], weight_decay, class_weights, CV_ITERATIONS
            ).step()
            with torch.no_grad():
                logits = candidate.eval()(features[held]).float()  # view 0: the centre crop
            table = probabilities.setdefault(weight_decay, torch.full((images, logits.shape[1]), math.nan))
            table[held] = logits.softmax(1)
            scores[weight_decay].append(float((logits.argmax(1) == labels[held]).double().mean()))
    return scores, probabilities


def _best(accuracy: dict[float, float]) -> float:
    """The penalty with the best accuracy; ties: the stronger, the safer choice on small data."""
    best = max(accuracy.values())
    return max(wd for wd, acc in accuracy.items() if math.isclose(acc, best))


def _standard_error(values: tuple[float, ...]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return math.sqrt(variance / len(values))


def _stratified_folds(
    labels: torch.Tensor, folds: int, generator: torch.Generator, groups: torch.Tensor | None = None
) -> torch.Tensor:
    """A fold number for each sample, each class dealt round-robin over the folds in a seeded
    order; with ``groups``, a group's samples are dealt together (as the group's first one)."""
    groups = torch.arange(len(labels)) if groups is None else groups
    _, group_of = groups.unique(return_inverse=True)
    first = torch.full((int(group_of.max()) + 1,), len(labels), dtype=torch.long)
    leaders = first.scatter_reduce(0, group_of, torch.arange(len(labels)), reduce="amin")
    fold_of_group = torch.empty(len(leaders), dtype=torch.long)
    for label in labels.unique():
        members = (labels[leaders] == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        fold_of_group[members] = torch.arange(len(members)) % folds
    return fold_of_group[group_of]
