"""The plan of a training run: every choice ``core.training.train`` needs, as one JSON-able record.

The pages keep a draft as a dict in this shape, so ``Plan.from_dict`` takes partial dicts
(defaults fill the rest) and names any key it does not know. Checks that need the backbone's
description (input size, stages, weights on disk) live in ``Plan.resolve``, which also fills the
backbone-dependent defaults; everything else is checked on construction.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from core.advice.cases import CASE_NUMBERS
from core.errors import TransferLabError
from core.models.catalog import BackboneCard, UnknownBackbone, card, default_card

OPTIMIZERS = ("adamw", "sgd", "adam")
SCHEDULES = ("cosine", "constant")
# The recipes of core.training.transforms.to_model_input, named here so that plans and pages need no torch.
AUGMENTATIONS: tuple[str, ...] = ("none", "light", "strong")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CLASS_WEIGHTING = ("auto", "on", "off")
SWITCH = ("on", "off")
DEVICES = ("auto", "cpu", "cuda", "mps")  # plus "cuda:N"
AUTO = "auto"  # a batch size chosen for the device (core.training.batch_size)
# The version of the plan's JSON shape, stored as "schema" in plan.json. A plan written by an
# older version is migrated on read (``Plan.from_stored``), never refused: every stored run must
# stay readable after an upgrade.
PLAN_SCHEMA = 3
# Past these, a plan is a typo or an attack on a shared server, not a training run.
MAX_EPOCHS = 1_000
MAX_BATCH_SIZE = 4_096
MAX_FEATURE_VIEWS = 16
MAX_IMAGE_SIZE = 2_048
MAX_SEED = 2**32 - 1
MAX_RATE = 10.0  # learning rates and weight decay: past this, the first step overflows
MAX_WORKERS = 1_024
SCALARS = {"str": str, "int": int, "float": float}


class PlanError(TransferLabError, ValueError):
    """A plan that cannot run, with a message that names the bad value and the valid choices."""


@dataclass(frozen=True)
class Plan:
    """What to train, on what, and how.

    ``lr`` is the learning rate of the new head; ``body_lr`` that of the pre-trained layers when
    they train (case 3: ``lr / 10`` unless given; case 4: ``lr``). ``freeze_epochs`` (case 3)
    trains only the head for that many epochs before unfreezing everything, as fastai's
    ``fine_tune`` does; ``None`` means one epoch when there are at least two. ``tune_through``
    (case 3 only) makes the fine-tune surgical (Lee et al., 2023): the body trains from its input
    through that stage, the later stages stay frozen, for a shift in the images' look that the
    first layers can absorb while the deep features still fit. ``feature_views``
    is how many views of each training image cases 1 and 2 compute features for: the centre
    crop, and with augmentation on, ``feature_views - 1`` augmented ones. Cases 1 and 2 fit
    their new layer by L-BFGS with a cross-validated penalty, so ``lr``, ``optimizer``,
    ``schedule``, ``weight_decay`` and ``batch_size`` (but for the feature pass) are for cases 3
    and 4. ``progressive_resizing`` (cases 3 and 4) trains the early epochs at a smaller image
    size and the last ones at ``image_size`` (``core.training.resizing``). ``patience`` stops a run after that many epochs
    without a better validation accuracy (0: never). ``workers`` is how many processes train
    the run together (DistributedDataParallel): ``torchrun`` on the local jobs backend, Ray
    Train under Ray; ``batch_size`` is each one's. ``batch_size`` ``"auto"`` is 32 on a CPU and,
    for cases 3 and 4 on a CUDA GPU, a size measured on the run's own steps; the learning rates
    are then meant for a batch of 32 and scale with the size chosen (``core.training.batch_size``).
    ``exclude`` names images of ``data`` (as the upload names them) that ingestion leaves out,
    typically an earlier run's suspects (``core.training.suspects``): the plan is the record of
    what the model did not see.
    """

    data: str = ""
    backbone: str = ""  # empty: the catalog's default, one that can be built on this machine
    case: int = 1
    cut: str | None = None
    tune_through: str | None = None
    weights: str = "imagenet"
    epochs: int = 10
    batch_size: int | str = AUTO
    lr: float = 1e-3
    body_lr: float | None = None
    freeze_epochs: int | None = None
    optimizer: str = "adamw"
    schedule: str = "cosine"
    weight_decay: float = 1e-4
    image_size: int | None = None
    augment: str = "light"
    progressive_resizing: str = "on"
    feature_views: int = 1
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    class_weights: str = "auto"
    patience: int = 5
    workers: int = 1
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_types(self)
        _check_exclude(self)
        _choice("case", self.case, CASE_NUMBERS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("augment", self.augment, AUGMENTATIONS)
        _choice("precision", self.precision, PRECISIONS)
        _choice("class_weights", self.class_weights, CLASS_WEIGHTING)
        _choice("progressive_resizing", self.progressive_resizing, SWITCH)
        if self.device not in DEVICES and not _is_cuda_index(self.device):
            raise PlanError(f"device {self.device!r} is not one of: {', '.join(DEVICES)}, cuda:N")
        _between("epochs", self.epochs, 1, MAX_EPOCHS)
        _check_batch_size(self.batch_size)
        _between("feature_views", self.feature_views, 1, MAX_FEATURE_VIEWS)
        _between("patience", self.patience, 0, MAX_EPOCHS)
        _between("workers", self.workers, 1, MAX_WORKERS)
        _between("seed", self.seed, 0, MAX_SEED)
        if self.image_size is not None:
            _between("image_size", self.image_size, 1, MAX_IMAGE_SIZE)
        _positive("lr", self.lr)
        _at_most("lr", self.lr, MAX_RATE)
        if self.body_lr is not None:
            _positive("body_lr", self.body_lr)
            _at_most("body_lr", self.body_lr, MAX_RATE)
        _at_least("weight_decay", self.weight_decay, 0)
        _at_most("weight_decay", self.weight_decay, MAX_RATE)
        if not 0 < self.val_fraction < 1:
            raise PlanError(f"val_fraction {self.val_fraction} must lie between 0 and 1")
        if self.freeze_epochs is not None and not 0 <= self.freeze_epochs < self.epochs:
            raise PlanError(
                f"freeze_epochs {self.freeze_epochs} must be at least 0 and less than epochs ({self.epochs})"
            )
        if self.cut is not None and self.case != 2:
            raise PlanError(
                f"cut {self.cut!r} applies to case 2 (truncated feature extraction) only; "
                f"remove it or choose case 2"
            )
        if self.tune_through is not None and self.case != 3:
            raise PlanError(
                f"tune_through {self.tune_through!r} applies to case 3 (fine-tuning) only; "
                f"remove it or choose case 3"
            )

    def to_dict(self) -> dict[str, Any]:
        return {"schema": PLAN_SCHEMA, **asdict(self), "exclude": list(self.exclude)}  # as JSON reads it

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        """A plan from a possibly partial dict; unknown keys are refused by name."""
        if not isinstance(data, Mapping):
            raise PlanError(f"a plan is a JSON object of plan fields, not {json.dumps(data)[:40]}")
        data = dict(data)
        schema = data.pop("schema", PLAN_SCHEMA)
        if schema != PLAN_SCHEMA:
            raise PlanError(
                f"plan schema {schema!r} is not this version's ({PLAN_SCHEMA}); stored plans load with Plan.from_stored"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PlanError(
                f"unknown plan field(s) {', '.join(map(repr, unknown))}; "
                f"valid fields: {', '.join(sorted(known))}"
            )
        return cls(**data)

    @classmethod
    def from_stored(cls, data: Mapping[str, Any]) -> Plan:
        """A plan as any version of the app stored it: older shapes are migrated step by step,
        and fields that a newer version added (which this one cannot honour) are dropped."""
        if not isinstance(data, Mapping):
            raise PlanError(f"a stored plan is a JSON object, not {json.dumps(data)[:40]}")
        data = dict(data)
        schema = data.pop("schema", 1)  # the first release stored no version
        for version in range(schema, PLAN_SCHEMA):
            data = _MIGRATIONS[version](data)
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    @property
    def trains_body(self) -> bool:
        """Cases 3 and 4 train the pre-trained layers; cases 1 and 2 keep them frozen."""
        return self.case >= 3

    @property
    def head_only_epochs(self) -> int:
        """Epochs at the start that train only the new head (case 3's two-stage schedule)."""
        if self.case != 3:
            return 0
        if self.freeze_epochs is None:
            return 1 if self.epochs >= 2 else 0
        return self.freeze_epochs

    @property
    def body_learning_rate(self) -> float:
        if self.body_lr is not None:
            return self.body_lr
        return self.lr / 10 if self.case == 3 else self.lr

    def resolve(self, lookup: Callable[[str], BackboneCard] = card) -> Plan:
        """The plan with backbone-dependent defaults filled in, checked against the backbone.

        No backbone takes the catalog's default; case 2 without a cut takes the family's default
        cut; no image size takes the size the backbone's weights were evaluated at. Raises
        ``PlanError`` naming the valid choices. ``lookup`` gives the backbone's card: by default
        from the catalog file, so that the web server needs no torch; processes that train pass
        ``core.models.backbones.card``, which computes it from the ``Backbone`` record.
        """
        if not self.backbone:
            return replace(self, backbone=default_card(lookup).name).resolve(lookup)
        if not self.data:
            raise PlanError("the plan has no data: give a zip file or a folder of class folders")
        if not Path(self.data).exists():
            raise PlanError(f"data {self.data!r} does not exist: give a zip file or a folder")
        try:
            backbone = lookup(self.backbone)
        except UnknownBackbone as exc:
            raise PlanError(str(exc)) from exc
        min_size, exact_size = backbone.input_size_rule(self.case)
        cut = self.cut or (backbone.default_cut if self.case == 2 else None)
        size = self.image_size or exact_size or backbone.preprocess.crop
        if exact_size is not None and size != exact_size:
            raise PlanError(f"{self.backbone} needs image_size {exact_size} exactly, not {size}")
        if size < min_size:
            raise PlanError(f"{self.backbone} needs image_size >= {min_size} px, not {size}")
        if cut is not None and cut not in backbone.stages:
            raise PlanError(
                f"cut {cut!r} is not a stage of {self.backbone}; choose one of: {', '.join(backbone.stages)}"
            )
        if self.tune_through is not None and self.tune_through not in backbone.stages:
            raise PlanError(
                f"tune_through {self.tune_through!r} is not a stage of {self.backbone}; "
                f"choose one of: {', '.join(backbone.stages)}"
            )
        if self.weights not in ("imagenet", "none") and not Path(self.weights).is_file():
            raise PlanError(f"weights {self.weights!r} is neither 'imagenet', 'none' nor a state_dict file")
        if self.weights == "imagenet" and not backbone.on_disk():
            raise PlanError(
                f"no ImageNet weights for {self.backbone} on this machine: {backbone.how_to_get()}"
            )
        return replace(self, cut=cut, image_size=size)


def _from_first_release(data: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 to 2: the fields are the same; schema 2 is the first to say its version."""
    return data


def _before_progressive_resizing(data: dict[str, Any]) -> dict[str, Any]:
    """Schema 2 to 3: runs before progressive resizing trained every epoch at one size."""
    return {**data, "progressive_resizing": "off"}


# _MIGRATIONS[v] turns a plan of schema v into one of schema v + 1.
_MIGRATIONS = {1: _from_first_release, 2: _before_progressive_resizing}


def _check_types(plan: Plan) -> None:
    for f in fields(plan):
        value = getattr(plan, f.name)
        kinds = [kind for kind in f.type.split(" | ") if kind != "None"]
        if not set(kinds) <= SCALARS.keys():
            continue  # a collection: checked by its own rule
        if value is None and "None" in f.type:
            continue
        if kinds == ["float"] and isinstance(value, int) and not isinstance(value, bool):
            value = float(value) if abs(value) < 2**1023 else math.inf  # JSON writes 1.0 as 1 in places
            object.__setattr__(plan, f.name, value)
        expected = tuple(SCALARS[kind] for kind in kinds)
        if isinstance(value, bool) or not isinstance(value, expected):
            raise PlanError(f"{f.name} must be {f.type}, not {value!r}"[:200])
        if kinds == ["float"] and not math.isfinite(value):
            raise PlanError(f"{f.name} must be a finite number, not {value!r}")


def _check_exclude(plan: Plan) -> None:
    """A list of file names (JSON has no tuples), kept as a tuple: the plan stays immutable."""
    names = plan.exclude
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n for n in names):
        raise PlanError(f"exclude must be a list of file names, not {names!r}"[:200])
    object.__setattr__(plan, "exclude", tuple(names))


def _check_batch_size(value: int | str) -> None:
    if isinstance(value, str):
        if value != AUTO:
            raise PlanError(
                f"batch_size {value!r} is neither {AUTO!r} nor a number from 2 to {MAX_BATCH_SIZE:,}"
            )
        return
    _between("batch_size", value, 2, MAX_BATCH_SIZE)  # BatchNorm cannot train on one image


def _between(name: str, value: int, low: int, high: int) -> None:
    _at_least(name, value, low)
    if value > high:
        raise PlanError(f"{name} must be at most {high:,}, not {value:,}")


def _choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise PlanError(f"{name} {value!r} is not one of: {', '.join(map(str, choices))}")


def _at_least(name: str, value: float, low: float) -> None:
    if value < low:
        raise PlanError(f"{name} must be at least {low}, not {value}")


def _at_most(name: str, value: float, high: float) -> None:
    if value > high:
        raise PlanError(f"{name} must be at most {high:g}, not {value:g}")


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise PlanError(f"{name} must be greater than 0, not {value}")


def _is_cuda_index(device: str) -> bool:
    prefix, _, index = device.partition(":")
    return prefix == "cuda" and index.isdigit()
