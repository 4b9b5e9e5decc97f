"""The four transfer-learning cases, as data, and the advice that picks one.

Two questions decide the approach: is the new data set *small* (then over-fitting is the danger,
so freeze) and is it *similar* to ImageNet (then the deep, high-level features carry over, so
keep them)? This module imports no torch: the Advisor page must answer instantly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from core.errors import TransferLabError

SIMILARITIES = ("similar", "different", "unsure")

# Where "small" ends, in images. Common guidance puts ~2,000 images firmly on the small side
# and ~1,000,000 on the large side; 10,000 sits between them where fine-tuning a whole network
# stops over-fitting in practice. It is a judgement call, so the UI lets the user move it.
DEFAULT_DIVIDING_LINE = 10_000
# Within this factor of the line (either side) the other size's case is offered as an alternative.
NEAR_LINE_FACTOR = 2.0
# Below this many images per class even a "large" data set over-fits class by class.
FEW_PER_CLASS = 20

SIMILARITY_EXAMPLES = {
    "similar": "Everyday photos of objects, animals or scenes like ImageNet's: dogs vs wolves, "
    "cars, food, furniture.",
    "different": "Images different from ImageNet's photos: flowers vs dogs is already a stretch; X-rays, "
    "satellite tiles, microscopy and handwriting are far from it.",
    "unsure": "Not sure: the advice takes the option that holds up either way and names the alternative.",
}

# A demo network (3 conv + 3 FC layers) that the Advisor page draws, coloured by each case.
DEMO_LAYERS = ("conv1", "conv2", "conv3", "fc1", "fc2", "fc3")
FATES = ("frozen", "trained", "removed", "new")


class AdviceError(TransferLabError, ValueError):
    """Inputs the advice cannot be given for (one class, fewer images than classes...)."""


@dataclass(frozen=True)
class Case:
    number: int
    name: str
    size: str  # "small" | "large"
    similarity: str  # "similar" | "different"
    when: str
    steps: tuple[str, ...]
    reasoning: str
    layer_fates: tuple[str, ...]  # one per DEMO_LAYERS entry; a "new" FC layer always follows

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.number,
            "name": self.name,
            "size": self.size,
            "similarity": self.similarity,
            "when": self.when,
            "steps": list(self.steps),
            "reasoning": self.reasoning,
            "layers": dict(zip(DEMO_LAYERS, self.layer_fates)) | {"new_fc": "new"},
        }


CASES: dict[int, Case] = {
    1: Case(
        number=1,
        name="feature extraction",
        size="small",
        similarity="similar",
        when="Small data set, similar to ImageNet.",
        steps=(
            "Slice off the end of the network: the last fully connected layer.",
            "Add a new fully connected layer with one output per new class.",
            "Randomise the weights of the new layer; keep all pre-trained weights.",
            "Freeze every pre-trained layer.",
            "Train only the new layer.",
        ),
        reasoning="With little data, re-training the network would over-fit, so its weights stay "
        "frozen. The images resemble ImageNet, so the high-level features near the end of the "
        "network already describe them: keep the whole network and learn only the new classifier.",
        layer_fates=("frozen", "frozen", "frozen", "frozen", "frozen", "removed"),
    ),
    2: Case(
        number=2,
        name="truncated feature extraction",
        size="small",
        similarity="different",
        when="Small data set, different from ImageNet.",
        steps=(
            "Slice off most of the pre-trained layers near the end of the network.",
            "Keep the early layers, which detect low-level features (edges, colours, textures).",
            "Add a new fully connected layer with one output per new class, randomly initialised.",
            "Freeze the kept pre-trained layers.",
            "Train only the new layer.",
        ),
        reasoning="With little data, re-training would over-fit, so the kept layers stay frozen. "
        "The images differ from ImageNet, so its high-level features (dog faces, wheels) do not "
        "apply; the low-level ones near the start of the network still do.",
        layer_fates=("frozen", "frozen", "removed", "removed", "removed", "removed"),
    ),
    3: Case(
        number=3,
        name="fine-tuning",
        size="large",
        similarity="similar",
        when="Large data set, similar to ImageNet.",
        steps=(
            "Remove the last fully connected layer.",
            "Add a new fully connected layer with one output per new class, randomly initialised.",
            "Initialise the rest of the network from the pre-trained weights.",
            "Re-train the whole network (a higher learning rate for the new layer).",
        ),
        reasoning="With plenty of data, re-training the whole network will not over-fit. The "
        "images resemble ImageNet, so the pre-trained weights are an excellent starting point "
        "and fine-tuning them adapts every level of features to the new classes.",
        layer_fates=("trained", "trained", "trained", "trained", "trained", "removed"),
    ),
    4: Case(
        number=4,
        name="fine-tuning or training from scratch",
        size="large",
        similarity="different",
        when="Large data set, different from ImageNet.",
        steps=(
            "Remove the last fully connected layer.",
            "Add a new fully connected layer with one output per new class, randomly initialised.",
            (
                "Initialise the rest of the network from the pre-trained weights (it may make "
                "training faster)."
            ),
            "Re-train the whole network.",
            (
                "If that does not give a successful model, re-train from scratch: random "
                "initialisation for every layer."
            ),
        ),
        reasoning="With plenty of data, the whole network can be re-trained without over-fitting. "
        "The images differ from ImageNet, so its features may not help; pre-trained weights "
        "still often speed training up, and random initialisation is the fallback when they "
        "do not lead to a successful model.",
        layer_fates=("trained", "trained", "trained", "trained", "trained", "removed"),
    ),
}
CASE_NUMBERS: tuple[int, ...] = tuple(CASES)  # 1, 2, 3, 4: the choices a plan or a model build accepts


@dataclass(frozen=True)
class Advice:
    case: int
    name: str
    steps: list[str]
    rationale: str
    thresholds: dict[str, Any]
    alternatives: list[int] = field(default_factory=list)
    size: str = "small"
    similarity: str = "similar"
    evidence: dict[str, Any] = field(default_factory=dict)  # measured numbers behind the answer, if any

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "name": self.name,
            "steps": list(self.steps),
            "rationale": self.rationale,
            "thresholds": dict(self.thresholds),
            "alternatives": list(self.alternatives),
            "size": self.size,
            "similarity": self.similarity,
            "evidence": dict(self.evidence),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Advice:
        """Advice as ``to_dict`` stored it, whatever version wrote it: keys this version does not
        know are ignored, missing ones read as no advice (case 1, no steps)."""
        known = {f.name for f in fields(cls)}
        stored = {key: value for key, value in data.items() if key in known}
        return cls(**{"case": 1, "name": "", "steps": [], "rationale": "", "thresholds": {}, **stored})


@dataclass(frozen=True)
class SizeReading:
    """The matrix's size for a data set, measured (``core.analysis.curve``), and why, in a few words."""

    size: str  # small | large
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"size": self.size, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SizeReading:
        """Tolerant, as ``Advice.from_dict``: a reading without a size is small, for no reason given."""
        return cls(size=data.get("size", "small"), reason=data.get("reason", ""))


def case_for(size: str, similarity: str) -> Case:
    """The case in the matrix cell (small|large, similar|different)."""
    for case in CASES.values():
        if case.size == size and case.similarity == similarity:
            return case
    raise ValueError(
        f"no case for size {size!r} and similarity {similarity!r}; "
        "size is small|large, similarity is similar|different"
    )


def size_of(num_images: int, dividing_line: int = DEFAULT_DIVIDING_LINE) -> str:
    """``small`` below the dividing line, ``large`` at or above it."""
    return "small" if num_images < dividing_line else "large"


def recommend(
    num_images: int,
    num_classes: int,
    similarity: str,
    dividing_line: int = DEFAULT_DIVIDING_LINE,
    *,
    size: str | None = None,
) -> Advice:
    """Pick the case for a data set of ``num_images`` in ``num_classes`` classes.

    ``size`` is a measured size (``core.analysis.curve``); without one, ``num_images`` is
    counted against ``dividing_line``.

    ``similarity`` is ``similar``, ``different`` or ``unsure``. When unsure, the advice takes the
    case that holds up either way (truncated feature extraction when small, fine-tuning from
    pre-trained weights when large) and lists the neighbour as an alternative. Near the dividing
    line the other size's case is an alternative too.
    """
    _validate(num_images, num_classes, similarity, dividing_line)
    if size not in (None, "small", "large"):
        raise AdviceError(f"unknown size {size!r}; choose one of: small, large")
    size = size or size_of(num_images, dividing_line)
    assumed = similarity if similarity != "unsure" else ("different" if size == "small" else "similar")
    chosen = case_for(size, assumed)

    alternatives: list[int] = []
    if similarity == "unsure":
        other = "similar" if assumed == "different" else "different"
        alternatives.append(case_for(size, other).number)
    near = dividing_line / NEAR_LINE_FACTOR <= num_images < dividing_line * NEAR_LINE_FACTOR
    if near:
        other_size = "large" if size == "small" else "small"
        alternatives.append(case_for(other_size, assumed).number)

    per_class = num_images / num_classes
    return Advice(
        case=chosen.number,
        name=chosen.name,
        steps=list(chosen.steps),
        rationale=_rationale(chosen, similarity, near, per_class, dividing_line),
        thresholds={
            "dividing_line": dividing_line,
            "near_line_factor": NEAR_LINE_FACTOR,
            "near_line": near,
            "images_per_class": round(per_class, 1),
            "few_per_class": FEW_PER_CLASS,
        },
        alternatives=sorted(set(alternatives)),
        size=size,
        similarity=assumed,
    )


def _rationale(case: Case, similarity: str, near: bool, per_class: float, line: int) -> str:
    parts = [case.reasoning]
    if similarity == "unsure":
        parts.append(
            "You were not sure how close your images are to ImageNet, so this is the option "
            "that works either way; try the alternative if you can check."
        )
    if near:
        parts.append(
            f"Your data set is close to the dividing line ({line:,} images), which is a "
            "judgement call: the other size's case is worth a try."
        )
    if per_class < FEW_PER_CLASS:
        # Advice that matches the case: more freezing for the frozen cases, a fallback for the others.
        remedy = (
            "prefer freezing more of the network."
            if case.size == "small"
            else f"if re-training over-fits, try case {case_for('small', case.similarity).number}, which freezes it."
        )
        parts.append(f"Only {per_class:.0f} images per class: expect unstable validation accuracy; {remedy}")
    return " ".join(parts)


def _validate(num_images: int, num_classes: int, similarity: str, dividing_line: int) -> None:
    if similarity not in SIMILARITIES:
        raise AdviceError(f"unknown similarity {similarity!r}; choose one of: {', '.join(SIMILARITIES)}")
    if num_classes < 2:
        raise AdviceError(f"need at least 2 classes to train a classifier, got {num_classes}")
    if num_images < num_classes:
        raise AdviceError(f"{num_images} images cannot cover {num_classes} classes")
    if dividing_line < 1:
        raise AdviceError(f"the dividing line must be a positive number of images, got {dividing_line}")
