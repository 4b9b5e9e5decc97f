"""Progressive resizing: the fine-tuning cases' early epochs at a smaller image size.

A training step's cost grows with the pixels it convolves, forward and backward; at 128 px a
step convolves a third of 224 px's. Early epochs, when the weights move most, learn as much
from smaller images (fastai's progressive resizing), and a network trained at a lower size and
evaluated at a higher one loses nothing (Touvron et al., "Fixing the train-test resolution
discrepancy", 2019). The last epochs train at the full size, so that BatchNorm's statistics and
the weights settle on the images validation, export and prediction see; validation is always
at the full size.

Torch-free: the pages describe the schedule from the plan alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from core.training.plan import Plan

# The smallest size, as a share of the full one: 224 px starts at 128 px.
SMALLEST_SHARE = 4 / 7
# The last epochs, as a share of all of them (at least one), train at the full size.
FULL_SIZE_SHARE = 0.3
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
        """In words: "epochs 1-5 at 128 px, 6-7 at 176 px, 8-10 at 224 px"."""
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

    The first half of the epochs trains at the smallest size, the last ``FULL_SIZE_SHARE`` at the
    full size, and the epochs between at the size midway.
    """
    full, epochs = plan.image_size, plan.epochs
    if full is None:
        raise ValueError("the plan's image_size is not resolved: call Plan.resolve first")
    min_size, exact_size = backbone.input_size_rule(plan.case)
    smallest = max(min_size, _step(full * SMALLEST_SHARE))
    if not (plan.trains_body and plan.progressive_resizing == "on") or exact_size or smallest >= full:
        return SizeSchedule((full,) * epochs)
    at_full = max(1, math.ceil(epochs * FULL_SIZE_SHARE))
    at_smallest = min(epochs // 2, epochs - at_full)
    between = epochs - at_full - at_smallest
    midway = max(smallest, _step((smallest + full) / 2))
    return SizeSchedule((smallest,) * at_smallest + (midway,) * between + (full,) * at_full)


def _step(size: float) -> int:
    return SIZE_STEP * round(size / SIZE_STEP)
