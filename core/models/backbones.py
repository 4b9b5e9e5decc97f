"""Backbones: every name resolved once into a ``Backbone`` record, and the catalog of them all.

``resolve("resnet50")`` is to this app what ``get_model_weights("resnet50").DEFAULT`` is to
torchvision: one record that carries the family's facts and anatomy, the input-size rules, the
preprocessing and where the weights come from. The surgery, training, the estimate and the
analysis take that record and ask it, never the name again; the pages and the plan read its
torch-free card (``Backbone.card``, ``core.models.catalog``).

Every number comes from the weights' own metadata (``num_params``, ``_metrics``, ``_ops``,
``_file_size``, ``transforms()``) or, for packaged backbones, from the architecture itself built
on the meta device, so nothing is downloaded to describe a backbone and nothing is copied by
hand except what neither carries: the family's paper and year. ``write_catalog`` stores every
record's card in the catalog file that the web server reads.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import get_model, get_model_weights

from core.models.catalog import BackboneCard, StageFact, UnknownBackbone, store
from core.models.families import Family, Paper, Variant, family_of
from core.models.packaged import PACKAGED, Packaged
from core.models.preprocess import Preprocess
from core.models.weights import PackagedWeights, TorchvisionWeights, WeightsSource


@dataclass(frozen=True)
class Backbone:
    """One backbone, resolved: what every part of the app needs to know about it."""

    name: str
    family: Family
    variant: Variant
    weights: WeightsSource
    preprocess: Preprocess  # resize, crop and normalisation its weights were evaluated with
    min_size: int  # smallest input side the architecture accepts
    top1: float | None  # ImageNet accuracy of its weights, percent
    top5: float | None

    @property
    def paper(self) -> Paper:
        return self.variant.paper or self.family.paper

    @property
    def packaged(self) -> bool:
        """Its weights come in a pip package: usable offline once installed."""
        return isinstance(self.weights, PackagedWeights)

    @cached_property
    def stages(self) -> tuple[str, ...]:
        """Where case 2 may cut, in forward order."""
        stages = self.variant.stages
        if isinstance(stages, tuple):
            return stages
        with on_meta():
            return stages(self.architecture(random_init=True))

    @property
    def default_cut(self) -> str:
        cut = self.variant.default_cut
        return self.stages[cut] if isinstance(cut, int) else cut

    def input_size_rule(self, case: int | None = None) -> tuple[int, int | None]:
        """``(min_size, exact_size or None)`` in pixels for square inputs in ``case``
        (``Family.input_size_rule``)."""
        return self.family.input_size_rule(self.min_size, case)

    def architecture(self, *, random_init: bool) -> nn.Module:
        """The full ImageNet architecture, its weights not loaded, built as its weights expect.

        The architecture never depends on the weights chosen: a random-init GoogLeNet also gets
        ``transform_input=True`` and a random-init ViT-H/14 the 518 px its weights use, so that
        state_dicts, preprocessing and input sizes agree whatever the initialisation.
        """
        if isinstance(self.weights, PackagedWeights):
            return self.weights.packaged.build()
        family, kwargs = self.family, {}
        if family.transform_input:
            kwargs["transform_input"] = True
        if family.aux is not None:
            kwargs.update(aux_logits=True, init_weights=random_init)
        if family.size_kwarg is not None:
            kwargs[family.size_kwarg] = self.min_size
        return get_model(self.name, weights=None, **kwargs)

    @cached_property
    def size(self) -> tuple[int, float | None]:
        """``(parameters, GFLOPs per image)``: from the weights' metadata, or measured on the
        meta device for packaged backbones (multiply-adds, as torchvision counts them)."""
        if isinstance(self.weights, TorchvisionWeights):
            meta = self.weights.enum.meta
            return int(meta["num_params"]), _finite(meta.get("_ops"))
        with on_meta():
            model = self.architecture(random_init=True)
            crop = self.preprocess.crop
            with FlopCounterMode(display=False) as counter:
                model(torch.empty(1, 3, crop, crop))
        return sum(p.numel() for p in model.parameters()), round(counter.get_total_flops() / 2e9, 3)

    def stage_facts(self) -> tuple[StageFact, ...]:
        """Each stage's output channels, stride and share of the network kept, computed once
        per process on the meta device (no weights, no arithmetic)."""
        return _stage_facts(self.name)

    def card(self) -> BackboneCard:
        """Its facts as the torch-free card the web server reads (``core.models.catalog``)."""
        params, gflops = self.size
        checkpoint, checkpoint_mb = None, None  # packaged weights: found in their package, live
        if isinstance(self.weights, TorchvisionWeights):
            checkpoint, checkpoint_mb = (
                self.weights.file.name,
                _finite(self.weights.enum.meta.get("_file_size")),
            )
        return BackboneCard(
            name=self.name,
            family=self.family,
            paper=self.paper,
            params=params,
            gflops=gflops,
            top1=self.top1,
            top5=self.top5,
            preprocess=self.preprocess,
            min_size=self.min_size,
            stages=self.stages,
            default_cut=self.default_cut,
            stage_facts=self.stage_facts(),
            weights_label=self.weights.label,
            checkpoint=checkpoint,
            checkpoint_mb=checkpoint_mb,
        )


@cache
def torchvision_names() -> tuple[str, ...]:
    """Every classification model in torchvision's registry."""
    return tuple(torchvision.models.list_models(module=torchvision.models))


def names() -> tuple[str, ...]:
    """Every backbone: torchvision's classifiers, then the packaged ones."""
    return torchvision_names() + tuple(sorted(PACKAGED))


@cache
def resolve(name: str) -> Backbone:
    """The record of backbone ``name``; ``UnknownBackbone`` naming the valid choices if none."""
    if name in PACKAGED:
        return _packaged(PACKAGED[name])
    if name not in torchvision_names():
        raise UnknownBackbone(f"unknown backbone {name!r}; choose one of: {', '.join(names())}")
    weights = get_model_weights(name).DEFAULT
    transform = weights.transforms()
    metrics = weights.meta.get("_metrics", {}).get("ImageNet-1K", {})
    family, variant = family_of(name)
    return Backbone(
        name=name,
        family=family,
        variant=variant,
        weights=TorchvisionWeights(name, weights),
        preprocess=Preprocess(
            resize=int(transform.resize_size[0]),
            crop=int(transform.crop_size[0]),
            mean=tuple(transform.mean),
            std=tuple(transform.std),
            interpolation=transform.interpolation.value,
        ),
        min_size=int(max(weights.meta.get("min_size", (1, 1)))),
        top1=_finite(metrics.get("acc@1")),
        top5=_finite(metrics.get("acc@5")),
    )


@cache
def card(name: str) -> BackboneCard:
    """The card of backbone ``name``, computed here: for processes that have torch loaded anyway
    (the worker, the command line), which need not read or wait for the catalog file."""
    return resolve(name).card()


def catalog() -> list[Backbone]:
    """Every backbone: torchvision's registry, then the packaged ones."""
    return [resolve(name) for name in names()]


def write_catalog() -> Path:
    """Compute every backbone's card and store them for the web server; the file's path."""
    return store([backbone.card() for backbone in catalog()])


@contextlib.contextmanager
def on_meta() -> Iterator[None]:
    """Build modules on the meta device: shapes without memory or arithmetic.

    RegNet's builder computes its widths with tensors, which cannot be read on the meta device;
    that arithmetic alone runs on the CPU.
    """
    from torchvision.models.regnet import BlockParams

    compute = BlockParams.__dict__["from_init_params"]

    def on_cpu(cls: type[BlockParams], *args: object, **kwargs: object) -> BlockParams:
        with torch.device("cpu"):
            return compute.__func__(cls, *args, **kwargs)

    BlockParams.from_init_params = classmethod(on_cpu)
    try:
        with torch.device("meta"):
            yield
    finally:
        BlockParams.from_init_params = compute


def _packaged(packaged: Packaged) -> Backbone:
    family, variant = family_of(packaged.name)
    return Backbone(
        name=packaged.name,
        family=family,
        variant=variant,
        weights=PackagedWeights(packaged),
        preprocess=packaged.preprocess,
        min_size=packaged.min_size,
        top1=packaged.top1,
        top5=packaged.top5,
    )


@cache
def _stage_facts(name: str) -> tuple[StageFact, ...]:
    backbone = resolve(name)
    with on_meta():
        model = backbone.architecture(random_init=True).eval()
        side = backbone.input_size_rule(case=2)[1] or backbone.preprocess.crop
        # Every module, in the order its forward began: a module's own parameters count once it
        # has started (a packaged EfficientNet's convolutions have a padding module inside them,
        # so counting leaves alone would miss their weights).
        calls: list[nn.Module] = []
        ends: dict[str, tuple[torch.Size, int]] = {}  # stage -> (output shape, calls so far)
        handles = [m.register_forward_pre_hook(lambda m, _: calls.append(m)) for m in model.modules()]
        for stage in backbone.stages:

            def ended(module: nn.Module, args: object, out: torch.Tensor, stage: str = stage) -> None:
                ends[stage] = (out.shape, len(calls))

            handles.append(model.get_submodule(stage).register_forward_hook(ended))
        model(torch.empty(1, 3, side, side))
        for handle in handles:
            handle.remove()
    excluded = {id(p) for path in _replaced(backbone) for p in model.get_submodule(path).parameters()}
    total = sum(p.numel() for p in model.parameters() if id(p) not in excluded)
    facts = []
    for index, stage in enumerate(backbone.stages, 1):
        shape, count = ends[stage]
        kept = {id(p): p.numel() for m in calls[:count] for p in m.parameters(recurse=False)}
        channels, grid = _channels_and_side(shape, backbone.family.layout)
        facts.append(
            StageFact(
                index=index,
                path=stage,
                channels=channels,
                side=grid,
                stride=_nominal_stride(side, grid),
                params_kept=round(sum(kept.values()) / total, 4),
                count=len(backbone.stages),
            )
        )
    return tuple(facts)


def _replaced(backbone: Backbone) -> tuple[str, ...]:
    """The head and auxiliary heads: what no cut ever keeps."""
    aux = backbone.family.aux
    return (backbone.family.head,) + (aux.modules if aux else ())


def _nominal_stride(side: int, grid: int | None) -> int | None:
    """The power of two a stage downsamples by: valid-padded nets (Inception v3, 299 px to a
    17-pixel grid) and odd input sizes miss it by a pixel or two."""
    return 2 ** round(math.log2(side / grid)) if grid else None


def _channels_and_side(shape: torch.Size, layout: str) -> tuple[int, int | None]:
    if layout == "tokens":  # [batch, tokens, width]
        return int(shape[-1]), None
    if layout == "nhwc":
        return int(shape[-1]), int(shape[1])
    return int(shape[1]), int(shape[-1])


def _finite(value: Any) -> float | None:
    """JSON has no NaN: missing or non-finite numbers become None."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
