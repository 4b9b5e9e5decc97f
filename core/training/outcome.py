"""Did a run work? One rule, for the run card, Results, the command line and case 4's fallback.

A model "works" when its best validation accuracy clearly beats always answering the most
common class (the majority rate): anything less is a model that learnt nothing usable, however
high the number looks on imbalanced data. The outcome names what to try next. Like the events,
it imports no torch: the web server judges runs too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# By how much the best validation accuracy must beat the majority rate to count as working.
SUCCESS_MARGIN = 0.05
FROM_SCRATCH = "from_scratch"  # the remedy the app offers as a button: case 4 with weights "none"
# The neighbouring case worth a try when one did not work: the other similarity, same size.
ALTERNATIVE_CASE = {1: 2, 2: 1, 3: 4, 4: 3}


@dataclass(frozen=True)
class Outcome:
    """Whether a run beat the majority-class baseline, and what to try when it did not."""

    worked: bool
    best_val_accuracy: float
    majority_rate: float
    remedies: tuple[str, ...] = ()  # what to try, in words, best first
    suggest: str | None = None  # a remedy the app offers as a button (FROM_SCRATCH)

    @property
    def headline(self) -> str:
        """One line: how the best accuracy compares with the majority rate."""
        compared = f"{self.best_val_accuracy:.1%} against {self.majority_rate:.1%} for always answering the most common class"
        if self.worked:
            return f"Best validation accuracy {compared}."
        return f"This run did not work: best validation accuracy {compared}."

    @property
    def advice(self) -> str:
        """The headline, and for a run that did not work, what to try."""
        if self.worked:
            return self.headline
        return f"{self.headline} What to try: {'; '.join(self.remedies)}."


def judge(best_val_accuracy: float, majority_rate: float, plan: Mapping[str, Any]) -> Outcome:
    """The outcome of a run's best accuracy, with remedies fitting its ``plan`` (a Plan's dict)."""
    worked = best_val_accuracy >= majority_rate + SUCCESS_MARGIN
    if worked:
        return Outcome(True, best_val_accuracy, majority_rate)
    case = int(plan.get("case", 1))
    from_scratch = case == 4 and plan.get("weights", "imagenet") != "none"
    remedies = ["training from scratch (weights 'none')"] if from_scratch else []
    remedies.append(f"case {ALTERNATIVE_CASE[case]}")
    if case <= 2:
        remedies.append("an earlier cut (case 2)" if case == 2 else "a larger backbone")
    else:
        epochs, lr = plan.get("epochs"), plan.get("lr")
        remedies.append(f"more epochs (now {epochs})" if epochs else "more epochs")
        remedies.append(f"a higher learning rate (now {lr:g})" if lr else "a higher learning rate")
    return Outcome(
        False, best_val_accuracy, majority_rate, tuple(remedies), FROM_SCRATCH if from_scratch else None
    )


def judge_metrics(metrics: Mapping[str, Any]) -> Outcome:
    """The outcome of a finished run, from its ``metrics.json``."""
    majority = metrics.get("majority_rate") or 0.0  # a run too old to have measured it
    return judge(metrics["best_val_accuracy"], majority, metrics.get("plan") or {})
