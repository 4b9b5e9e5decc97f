"""The backbone catalog the web server reads: one torch-free ``BackboneCard`` per backbone.

A page that lists backbones, or a plan checked against one, needs facts that only torch can
compute (stages, stage facts, weights metadata, a meta-device forward), but importing torch into
the server costs seconds and hundreds of megabytes per process and initialises CUDA where nothing
trains. So the torch side (``core.models.backbones``) writes every backbone's card into one JSON
file under the cache folder, and the server only reads it. The file is named after what its
numbers depend on: the torch and torchvision versions, the packaged architecture's version and
the code that describes backbones (a digest, so an edit to a family's stages can never be served
stale). When it is missing, a child process writes it (``python -m core backbones
--write-catalog``), not this one; a lock makes the servers and workers that find it missing at
the same time wait for one child instead of each starting its own.

"On disk" is never part of the file: weights arrive and leave while the server runs, so a card
keeps where its weights file lives and looks each time it is asked.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from core import storage
from core.errors import TransferLabError
from core.models.families import Family, Paper, family_of
from core.models.packaged import ARCHITECTURE_PACKAGE, PACKAGED
from core.models.preprocess import Preprocess

# The ILSVRC classification results as the competitions reported them (top-5 error, %), with the
# depth in weight layers. torchvision's re-trained checkpoints score differently; see history().
COMPETITION_RESULTS: tuple[dict[str, Any], ...] = (
    {"model": "2011 winner (XRCE)", "year": 2011, "top5_error": 26.0, "layers": None, "backbone": None},
    {"model": "AlexNet", "year": 2012, "top5_error": 15.3, "layers": 8, "backbone": "alexnet"},
    {"model": "VGG", "year": 2014, "top5_error": 7.3, "layers": 19, "backbone": "vgg19"},
    {"model": "GoogLeNet", "year": 2014, "top5_error": 6.7, "layers": 22, "backbone": "googlenet"},
    {"model": "ResNet", "year": 2015, "top5_error": 3.57, "layers": 152, "backbone": "resnet152"},
)

# Tried in order when choosing a default; the packaged one is the fallback with no weights on disk.
PREFERRED_DEFAULTS = ("resnet18", "resnet50", "efficientnet_b0", "mobilenet_v3_large", "convnext_tiny")
OFFLINE_DEFAULT = "efficientnet_lite0"

# The code whose edits change what a card says: part of the catalog file's name.
DESCRIBING_CODE = ("backbones.py", "catalog.py", "families.py", "packaged.py", "preprocess.py")
WRITE_COMMAND = ("backbones", "--write-catalog")  # after ``python -m core``


class UnknownBackbone(TransferLabError, ValueError):
    """A name that is neither a torchvision classifier nor a packaged backbone."""


class CatalogUnavailable(TransferLabError, RuntimeError):
    """The catalog file is missing and the child process that writes it failed."""


@dataclass(frozen=True)
class StageFact:
    """Where case 2 may cut, described for people: what the kept part ends with."""

    index: int  # 1 for the first stage
    path: str  # the module's dotted path
    channels: int  # of the stage's output
    side: int | None  # its output's height and width at the default input size (None: tokens)
    stride: int | None  # input side / output side (None: tokens, which have no grid)
    params_kept: float  # share of the network's parameters (head excluded) a cut here keeps
    count: int  # how many stages the network has

    def label(self) -> str:
        """The cut in words: "stage 5 of 7 · 112 channels · 14×14 · keeps 60% of the network"."""
        grid = f"{self.side}×{self.side}" if self.side else "tokens"
        return (
            f"stage {self.index} of {self.count} · {self.channels:,} channels · {grid} · "
            f"keeps {_share(self.params_kept)} of the network"
        )


@dataclass(frozen=True)
class BackboneCard:
    """One backbone as the pages and plans see it: the ``Backbone`` record's facts, computed
    once, with no torch needed to read them."""

    name: str
    family: Family = field(repr=False)
    paper: Paper
    params: int
    gflops: float | None
    top1: float | None  # ImageNet accuracy of its weights, percent
    top5: float | None
    preprocess: Preprocess
    min_size: int  # smallest input side the architecture accepts
    stages: tuple[str, ...]
    default_cut: str
    stage_facts: tuple[StageFact, ...]
    weights_label: str
    # torchvision's checkpoint file name in the hub cache; None for packaged weights.
    checkpoint: str | None
    checkpoint_mb: float | None  # its size, from the weights' metadata

    @property
    def packaged(self) -> bool:
        """Its weights come in a pip package: usable offline once installed."""
        return self.checkpoint is None

    def input_size_rule(self, case: int | None = None) -> tuple[int, int | None]:
        """``(min_size, exact_size or None)`` in pixels for square inputs in ``case``."""
        return self.family.input_size_rule(self.min_size, case)

    def weights_file(self) -> Path | None:
        """Where its ImageNet weights are, or would be once fetched (None: not installed)."""
        if self.packaged:
            return PACKAGED[self.name].weights_file()
        return hub_checkpoints() / self.checkpoint

    def on_disk(self) -> bool:
        """Its ImageNet weights are on this machine now (asked each time, never cached)."""
        if self.packaged:
            return PACKAGED[self.name].installed()
        return self.weights_file().is_file()

    def how_to_get(self) -> str:
        """The command that puts its ImageNet weights on this machine, for a refusal."""
        if self.packaged:
            return f"install them with `{PACKAGED[self.name].install_command}`, or use weights 'none'"
        return f"fetch them with `python -m core fetch-weights {self.name}`, or use weights 'none'"

    def summary(self) -> dict[str, Any]:
        """The catalog's row: plain numbers and strings, JSON-safe, "on disk" as of now."""
        on_disk = self.on_disk()
        file = self.weights_file()
        size = self.checkpoint_mb if not self.packaged else _mb(file) if on_disk else None
        return {
            "name": self.name,
            "family": self.family.name,
            "year": self.paper.year,
            "paper": self.paper.title,
            "params": self.params,
            "gflops": self.gflops,
            "file_size_mb": size,
            "top1": self.top1,
            "top5": self.top5,
            "input_size": self.preprocess.crop,
            "resize_size": self.preprocess.resize,
            "min_size": self.min_size,
            "weights": self.weights_label,
            "on_disk": on_disk,
            "offline": self.packaged and on_disk,
        }

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["family"] = self.family.name
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackboneCard:
        family, _ = family_of(data["name"])
        return cls(
            **{
                **data,
                "family": family,
                "paper": Paper(**data["paper"]),
                "preprocess": Preprocess.from_dict(data["preprocess"]),
                "stages": tuple(data["stages"]),
                "stage_facts": tuple(StageFact(**fact) for fact in data["stage_facts"]),
            }
        )


def cards() -> tuple[BackboneCard, ...]:
    """Every backbone's card: torchvision's registry, then the packaged ones."""
    return tuple(_read(catalog_file()).values())


def names() -> tuple[str, ...]:
    """Every backbone's name, in the catalog's order."""
    return tuple(_read(catalog_file()))


def card(name: str) -> BackboneCard:
    """The card of backbone ``name``; ``UnknownBackbone`` naming the valid choices if none."""
    by_name = _read(catalog_file())
    if name not in by_name:
        raise UnknownBackbone(f"unknown backbone {name!r}; choose one of: {', '.join(by_name)}")
    return by_name[name]


def default_card(lookup: Callable[[str], BackboneCard] = card) -> BackboneCard:
    """A sensible first choice that can actually be built here, without a download; ``lookup``
    gives a card by name (``core.models.backbones.card`` where torch is loaded anyway)."""
    return next((c for c in map(lookup, PREFERRED_DEFAULTS) if c.on_disk()), lookup(OFFLINE_DEFAULT))


def history() -> list[dict[str, Any]]:
    """The competition results beside torchvision's own checkpoints of the same architectures;
    ``checkpoint`` tells the two apart, ``source`` says it in words."""
    rows = []
    for result in COMPETITION_RESULTS:
        rows.append({**result, "checkpoint": False, "source": "ILSVRC competition result"})
        if result["backbone"]:
            top5 = card(result["backbone"]).top5
            rows.append(
                {
                    **result,
                    "top5_error": round(100.0 - top5, 2),
                    "checkpoint": True,
                    "source": f"torchvision checkpoint ({result['backbone']})",
                }
            )
    return rows


def hub_checkpoints() -> Path:
    """torch's hub cache of checkpoints, found as ``torch.hub.get_dir`` finds it: ``TORCH_HOME``,
    else ``$XDG_CACHE_HOME/torch``, else ``~/.cache/torch``; then ``hub/checkpoints``."""
    cache_home = os.environ.get("XDG_CACHE_HOME", "~/.cache")
    torch_home = os.environ.get("TORCH_HOME", os.path.join(cache_home, "torch"))
    return Path(torch_home).expanduser() / "hub" / "checkpoints"


def catalog_file() -> Path:
    """The catalog for these library versions and this code, under the cache folder."""
    return storage.cache_dir() / "backbones" / f"catalog-{_version_key()}.json"


def store(all_cards: list[BackboneCard]) -> Path:
    """Store the catalog the torch side computed, whole or not at all, and remove the catalogs of
    other versions: each upgrade would otherwise leave one behind for good."""
    path = catalog_file()
    storage.write_json(path, [c.to_dict() for c in all_cards])
    for stale in path.parent.glob("catalog-*"):
        if stale.stem != path.stem:
            stale.unlink(missing_ok=True)
    return path


@cache
def _version_key() -> str:
    here = Path(__file__).parent
    parts = [_installed("torch"), _installed("torchvision"), _installed(ARCHITECTURE_PACKAGE.split("==")[0])]
    digest = hashlib.sha256("\n".join(parts).encode())
    for name in DESCRIBING_CODE:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:16]


def _installed(distribution: str) -> str:
    try:
        return f"{distribution} {metadata.version(distribution)}"
    except metadata.PackageNotFoundError:
        return f"{distribution} absent"


@cache
def _read(path: Path) -> dict[str, BackboneCard]:
    """The cards in ``path``, written first by a child process if missing; read once per process."""
    if not path.is_file():
        with storage.locked(path.with_suffix(".lock")):
            if not path.is_file():  # another process may have written it while this one waited
                _write_in_a_child(path)
    return {data["name"]: BackboneCard.from_dict(data) for data in storage.read_json(path)}


def _write_in_a_child(path: Path) -> None:
    command = [sys.executable, "-m", "core", *WRITE_COMMAND]
    done = subprocess.run(command, cwd=storage.CODE_ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise CatalogUnavailable(
            f"the backbone catalog could not be written: `python -m core {' '.join(WRITE_COMMAND)}` "
            f"exited with {done.returncode}: {' '.join(done.stderr.split())[-400:]}"
        )
    if not path.is_file():  # the child read other code from disk than this process runs
        raise CatalogUnavailable(
            f"the backbone catalog was written to {done.stdout.strip()}, not {path}: the code "
            "changed since this process started; restart it"
        )


def _mb(file: Path | None) -> float | None:
    return round(file.stat().st_size / 2**20, 2) if file is not None else None


def _share(fraction: float) -> str:
    return "under 1%" if 0 < fraction < 0.005 else f"{fraction:.0%}"
