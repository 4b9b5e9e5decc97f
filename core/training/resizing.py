"""Progressive resizing: the fine-tuning cases' early epochs at a smaller image size.

A training step's cost grows faster than the pixels it convolves, forward and backward: on an
AVX2 CPU in fp32 a step at 128 px costs a fifth of one at 224 px. Early epochs, when the weights
move most, learn as much from smaller images (fastai's progressive resizing), and a network
trained below the size it is evaluated at loses nothing once its last epoch at the full size has
settled BatchNorm's statistics there (Touvron et al., "Fixing the train-test resolution
discrepancy", 2019: a short fine-tune at the test size is all it takes). So most epochs train
small and one in ten at the full size; validation is always at the full size.

Torch-free: the pages describe the schedule from the plan alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from core.training.plan import Plan

# The smallest size, as a share of the full one: 224 px starts at 128 px.
SMALLEST_SHARE = 4 / 7
# Of every ten epochs, this many train at the smallest size and one at the full size (at least
# one epoch does); those between, at the size midway on a log scale.
SMALLEST_IN_TEN = 6
# Sizes are multiples of this: every stride of a convolutional backbone divides it.
SIZE_STEP = 32


class SizeRule(Protocol):
    """A backbone's description (``Backbone`` or its catalog card): the sizes it accepts."""

    def input_size_rule(self, case: int | None = None) -> tuple[int, int | None]: ...


@dataclass(frozen=True)
class SizeSchedule:
    """The image size of each training epoch; ``sizes[-1]`` is the plan's ``image_size``."""

    sizes: tuple[int, ...]

    @property
    def full(self) -> int:
        return self.sizes[-1]

    @property
    def progressive(self) -> bool:
        return len(set(self.sizes)) > 1

    def at(self, epoch: int) -> int:
        """The size of 0-based ``epoch``."""
        return self.sizes[epoch]

    def pixel_share(self) -> float:
        """The epochs' mean pixels per image against the full size's: to first order, what
        their steps cost against steps at the full size."""
        return sum((size / self.full) ** 2 for size in self.sizes) / len(self.sizes)

    def describe(self) -> str:
        """In words: "epochs 1-6 at 128 px, 7-9 at 160 px, 10 at 224 px"."""
        parts, start = [], 0
        for end in range(1, len(self.sizes) + 1):
            if end == len(self.sizes) or self.sizes[end] != self.sizes[start]:
                epochs = f"{start + 1}" if end - start == 1 else f"{start + 1}-{end}"
                parts.append(f"{epochs} at {self.sizes[start]} px")
                start = end
        return "epoch" + "s" * (len(self.sizes) > 1) + " " + ", ".join(parts)


def size_schedule(plan: Plan, backbone: SizeRule) -> SizeSchedule:
    """The epochs' sizes for a resolved ``plan``: one size unless the plan trains the body with
    ``progressive_resizing`` on and the backbone takes a smaller size than the plan's.

    Six epochs in ten train at the smallest size, one in ten (at least one) at the full size, and
    those between at the geometric mean of the two (160 px between 128 and 224).
    """
    full, epochs = plan.image_size, plan.epochs
    if full is None:
        raise ValueError("the plan's image_size is not resolved: call Plan.resolve first")
    min_size, exact_size = backbone.input_size_rule(plan.case)
    smallest = max(min_size, _step(full * SMALLEST_SHARE))
    if not (plan.trains_body and plan.progressive_resizing == "on") or exact_size or smallest >= full:
        return SizeSchedule((full,) * epochs)
    at_full = max(1, math.ceil(epochs / 10))
    at_smallest = min(epochs * SMALLEST_IN_TEN // 10, epochs - at_full)
    between = epochs - at_full - at_smallest
    midway = max(smallest, _step(math.sqrt(smallest * full)))
    return SizeSchedule((smallest,) * at_smallest + (midway,) * between + (full,) * at_full)


def _step(size: float) -> int:
    return SIZE_STEP * round(size / SIZE_STEP)
