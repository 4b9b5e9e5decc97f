"""Images that look mislabelled: confident learning on probabilities from a model that did not
train on them.

Confident learning (Northcutt et al., 2021) estimates, per class, how sure the model usually is
when an image truly belongs there (its threshold), and flags an image when the probability of its
given label falls below that class's threshold while another class clears its own. ``cleanlab``
implements it (``filter_by="confident_learning"``). The probabilities must be held out, or the
model has learnt the wrong labels and vouches for them: cases 1 and 2 use the out-of-fold
probabilities of the new layer's cross-validation on the training images, cases 3 and 4 the
validation split's.

The record is the run's ``suspects.json``, read back without torch (or cleanlab)
by the pages and the command line; ``plan_without`` gives the next run's plan without them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from core.storage import RunFiles, read_json, write_json

OUT_OF_FOLD = "out-of-fold probabilities of the training images"
VALIDATION = "the validation images' probabilities"


@dataclass(frozen=True)
class Suspect:
    """One image whose given label the held-out model finds unlikely, and what it suggests."""

    file: str  # the name people know the image by: its path inside the upload
    given: str
    suggested: str
    given_probability: float
    suggested_probability: float


@dataclass(frozen=True)
class Suspects:
    """What was checked (``checked`` images, with which probabilities) and what looks wrong,
    the least likely label first."""

    source: str  # OUT_OF_FOLD | VALIDATION
    checked: int
    images: tuple[Suspect, ...] = ()

    @property
    def files(self) -> list[str]:
        """The suspects' file names, as a plan's ``exclude`` takes them."""
        return [suspect.file for suspect in self.images]

    def plan_without(self, plan: Mapping[str, Any]) -> dict[str, Any]:
        """``plan`` (a stored plan's fields) for a next run that leaves these images out too."""
        return {**plan, "exclude": sorted({*plan.get("exclude", ()), *self.files})}

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "checked": self.checked, "images": [asdict(s) for s in self.images]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Suspects:
        """Tolerant: fields a later version adds are ignored."""
        known = {f.name for f in fields(Suspect)}
        images = tuple(
            Suspect(**{k: v for k, v in row.items() if k in known}) for row in data.get("images", [])
        )
        return cls(str(data.get("source", "")), int(data.get("checked", 0)), images)

    def write(self, run_dir: Path) -> None:
        write_json(RunFiles(Path(run_dir)).suspects_file, self.to_dict())

    @classmethod
    def read(cls, run_dir: Path) -> Suspects | None:
        """The run's suspects; None for a run that did not look (or is not finished)."""
        stored = read_json(RunFiles(Path(run_dir)).suspects_file)
        return cls.from_dict(stored) if isinstance(stored, dict) else None


def find_suspects(
    probabilities: Any, labels: Sequence[int], files: Sequence[str], classes: Sequence[str], source: str
) -> Suspects:
    """The images among ``files`` whose given ``labels`` confident learning finds unlikely under
    held-out ``probabilities`` ``[images, classes]`` (a NumPy array; rows with NaN, images no
    held-out model saw, are skipped)."""
    import numpy as np
    from cleanlab.filter import find_label_issues

    probabilities = np.asarray(probabilities, dtype=float)
    labels = np.asarray(labels, dtype=int)
    seen = ~np.isnan(probabilities).any(axis=1)
    rows = np.flatnonzero(seen)
    # cleanlab needs every class among the given labels, each with a few images to set its threshold.
    if len(rows) == 0 or len(np.unique(labels[rows])) < probabilities.shape[1]:
        return Suspects(source, len(rows))
    ranked = find_label_issues(
        labels[rows],
        probabilities[rows],
        filter_by="confident_learning",
        return_indices_ranked_by="self_confidence",
        n_jobs=1,
    )
    images = []
    for row in rows[ranked]:
        given = int(labels[row])
        others = probabilities[row].copy()
        others[given] = -1.0
        suggested = int(others.argmax())
        images.append(
            Suspect(
                file=files[row],
                given=classes[given],
                suggested=classes[suggested],
                given_probability=round(float(probabilities[row, given]), 4),
                suggested_probability=round(float(probabilities[row, suggested]), 4),
            )
        )
    return Suspects(source, len(rows), tuple(images))
