"""Model surgery: any supported backbone adapted to one of the four transfer-learning cases.

1. Feature extraction: a new last layer; everything else frozen.
2. Truncated feature extraction: the network up to a stage (``cut``), global average pooling
   and a new linear layer; the kept stages frozen.
3. Fine-tuning: a new last layer; everything trains, the new layer at a higher learning rate.
   Surgical (``tune_through``): only the body from its input through that stage trains with the
   new layer; the later stages are frozen.
4. Fine-tuning or training from scratch: like 3, from pre-trained weights by default and from
   random ones with ``weights="none"``.

Each case is a generic operation on a ``Backbone`` record (``core.models.backbones.resolve``). Frozen
BatchNorm layers stay in eval mode whatever ``model.train()`` says: their running statistics
are part of what was frozen. Every model records what was done to it in ``model.surgery``, which
``split_frozen``, ``param_groups`` and ``aux_weight`` read.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from itertools import chain

import torch
import torchvision
from torch import fx, nn

from core.advice.cases import CASE_NUMBERS
from core.models.backbones import Backbone
from core.models.families import AuxHeads
from core.models.weights import WeightsFileError, load_state_dict_file

# How each layout's spatial (or token) dimensions are averaged away in case 2.
POOL_DIMS = {"nchw": (2, 3), "nhwc": (1, 2), "tokens": (1,)}


@dataclass(frozen=True)
class Surgery:
    """What ``build_model`` did to a model, kept on it as ``model.surgery``."""

    backbone: Backbone
    case: int
    num_classes: int
    cut: str | None  # case 2 only
    new_layers: tuple[str, ...]  # dotted paths of the freshly initialised layers, the head first
    aux_weight: float = 0.0  # > 0 when auxiliary heads are kept and trained
    tune_through: str | None = None  # case 3 only: the last stage of the body that trains
    tuned: frozenset[str] = frozenset()  # then the names of the body's parameters that train

    @property
    def frozen_body(self) -> bool:
        return self.case in (1, 2)


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d that stays in eval mode, so its running statistics never change.

    Frozen layers get this class in place (as ``torch.nn.utils.parametrize`` swaps classes), so
    they keep their parameters, buffers, ``state_dict`` keys and forward. Unlike
    ``torchvision.ops.FrozenBatchNorm2d`` it is still an ``nn.BatchNorm2d``.
    """

    def train(self, mode: bool = True) -> FrozenBatchNorm2d:
        return super().train(False)


class GlobalAvgPool(nn.Module):
    """Average over the given dimensions: case 2's pooling for any feature layout."""

    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=self.dims)

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


class Truncated(nn.Module):
    """Case 2's model: a backbone's own forward, stopped after a stage, pooled and classified."""

    def __init__(self, trunk: nn.Module, pool: GlobalAvgPool, fc: nn.Linear) -> None:
        super().__init__()
        self.trunk, self.pool, self.fc = trunk, pool, fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.trunk(x)))


def build_model(
    backbone: Backbone,
    case: int,
    num_classes: int,
    weights: str = "imagenet",
    cut: str | None = None,
    *,
    tune_through: str | None = None,
) -> nn.Module:
    """``backbone`` adapted to ``case`` with a new ``num_classes``-way head.

    ``weights``: ``"imagenet"`` (the backbone's own ImageNet weights: torchvision's from the
    torch hub cache, downloaded there if missing, ``core.models.weights.WeightsUnavailable`` offline;
    packaged ones from their package), ``"none"`` (random init) or the path of a state_dict file
    for the whole backbone (its head may differ). ``cut``: case 2 only, one of its stages
    (default: ``backbone.default_cut``). ``tune_through``: case 3 only, the stage after which the
    body stays frozen.
    """
    _check_arguments(backbone, case, num_classes, cut, tune_through)
    family = backbone.family
    model = initialised(backbone, weights, keep_aux=case in (3, 4))
    if case == 2:
        return _truncated(model, backbone, cut or backbone.default_cut, num_classes)
    if case == 1:
        _freeze(model)
    tuned = _freeze_after(model, tune_through) if tune_through is not None else frozenset()
    new_layers = (family.head,)
    if family.aux is not None and case in (3, 4):
        new_layers += family.aux.layers
    for path in new_layers:
        _replace_layer(model, path, num_classes)
    aux = family.aux.weight if family.aux is not None and case in (3, 4) else 0.0
    model.surgery = Surgery(backbone, case, num_classes, None, new_layers, aux, tune_through, tuned)
    return model


def split_frozen(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """Cases 1 and 2: ``(body, head)`` with ``head(body(x)) == model(x)`` in eval mode.

    The body is all frozen and the head holds every trainable parameter, so a trainer can
    compute ``body(x)`` once per image and train the head on the cached features. Both share
    their modules with ``model``; ``model`` itself is left as it is.
    """
    surgery = _surgery(model)
    if not surgery.frozen_body:
        raise ValueError(f"split_frozen is for cases 1 and 2; this {surgery.backbone} is case {surgery.case}")
    if isinstance(model, Truncated):
        return nn.Sequential(model.trunk, model.pool), model.fc
    family = surgery.backbone.family
    if family.split is not None:
        body, head = family.split
        return model.get_submodule(body), nn.Sequential(model.get_submodule(head), nn.Flatten(1))
    return _with_replaced(model, family.head, nn.Identity()), model.get_submodule(family.head)


def param_groups(model: nn.Module, head_lr: float, body_lr: float) -> list[dict]:
    """Optimizer groups over the trainable parameters: new layers at ``head_lr``, the rest at
    ``body_lr``. Trainable means as the surgery decided, whatever ``requires_grad`` has been set
    to since (a trainer may freeze the body for a warm-up stage); an empty group is left out."""
    surgery = _surgery(model)
    new = {id(p) for path in surgery.new_layers for p in model.get_submodule(path).parameters()}
    head = [p for p in model.parameters() if id(p) in new]
    body = [] if surgery.frozen_body else [
        p for name, p in model.named_parameters()
        if id(p) not in new and (surgery.tune_through is None or name in surgery.tuned)
    ]  # fmt: skip
    groups = [
        {"name": "head", "params": head, "lr": head_lr},
        {"name": "body", "params": body, "lr": body_lr},
    ]
    return [g for g in groups if g["params"]]


def aux_weight(model: nn.Module) -> float:
    """The auxiliary losses' weight: 0.0 when the model has no auxiliary outputs (it then always
    returns a tensor); 0.3 GoogLeNet, 0.4 Inception v3 in cases 3 and 4, whose models return
    torchvision's namedtuple (logits first, then aux logits) in train mode, a tensor in eval."""
    return _surgery(model).aux_weight


# -- building --------------------------------------------------------------------------------


def _check_arguments(
    backbone: Backbone, case: int, num_classes: int, cut: str | None, tune_through: str | None
) -> None:
    if case not in CASE_NUMBERS:
        raise ValueError(f"unknown case {case!r}; choose one of: {', '.join(map(str, CASE_NUMBERS))}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, not {num_classes!r}")
    _check_stage(backbone, case, "cut", cut, 2, "truncated feature extraction")
    _check_stage(backbone, case, "tune_through", tune_through, 3, "fine-tuning")


def _check_stage(
    backbone: Backbone, case: int, field: str, stage: str | None, applies_to: int, name: str
) -> None:
    """A plan field that names a stage: set only in the case it belongs to, and a real stage."""
    if stage is None:
        return
    if case != applies_to:
        raise ValueError(f"{field} {stage!r} applies to case {applies_to} ({name}) only, not case {case}")
    if stage not in backbone.stages:
        raise ValueError(
            f"{field} {stage!r} is not a stage of {backbone.name}; choose one of: {', '.join(backbone.stages)}"
        )


def initialised(backbone: Backbone, weights: str, *, keep_aux: bool = False) -> nn.Module:
    """The full ImageNet architecture with the requested weights, aux heads dropped unless kept."""
    # A user's file is read before building, so that a bad path fails fast.
    state = None if weights in ("imagenet", "none") else load_state_dict_file(weights)
    model = backbone.architecture(random_init=weights == "none")
    if weights == "imagenet":
        model.load_state_dict(backbone.weights.state_dict())
    elif state is not None:
        _load_checked(model, state, backbone, str(weights))
    aux = backbone.family.aux
    if aux is not None and not keep_aux:
        _drop_aux(model, aux)
    return model


def _load_checked(model: nn.Module, state: dict, backbone: Backbone, source: str) -> None:
    """Load a user's state_dict, explaining which keys differ when it does not fit.

    Keys of the layers the surgery replaces (head, aux heads) may be absent or shaped for
    another number of classes: they are re-initialised anyway.
    """
    expected = model.state_dict()
    family = backbone.family
    replaced = (family.head,) + (family.aux.layers + family.aux.modules if family.aux else ())
    prefixes = tuple(f"{path}." for path in replaced)
    missing = [
        k
        for k in expected
        if k not in state and not k.startswith(prefixes) and not k.endswith("num_batches_tracked")
    ]
    unexpected = [k for k in state if k not in expected]
    reshaped = [
        k
        for k in state
        if k in expected and state[k].shape != expected[k].shape and not k.startswith(prefixes)
    ]
    if missing or unexpected or reshaped:
        raise WeightsFileError(
            _mismatch(source, backbone.name, missing, unexpected, reshaped, state, expected)
        )
    fitting = {k: v for k, v in state.items() if v.shape == expected[k].shape}
    model.load_state_dict(fitting, strict=False)


def _mismatch(
    source: str, backbone: str, missing: list, unexpected: list, reshaped: list, state: dict, expected: dict
) -> str:
    def some(keys: list) -> str:
        return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} keys missing from the file ({some(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys in the file ({some(unexpected)})")
    if reshaped:
        k = reshaped[0]
        parts.append(
            f"{len(reshaped)} keys with other shapes ({k}: file {tuple(state[k].shape)}, "
            f"{backbone} {tuple(expected[k].shape)})"
        )
    hint = ""
    if unexpected and all(k.startswith("module.") for k in unexpected):
        hint = "; its keys start with 'module.' (saved from DataParallel): strip that prefix"
    return f"weights {source} do not fit {backbone}: {'; '.join(parts)}{hint}"


def _drop_aux(model: nn.Module, aux: AuxHeads) -> None:
    """What torchvision does for aux_logits=False: the model then always returns a tensor."""
    model.aux_logits = False
    for path in aux.modules:
        _set_submodule(model, path, None)


def _truncated(model: nn.Module, backbone: Backbone, cut: str, num_classes: int) -> Truncated:
    trunk = _trunk(model, cut)
    _freeze(trunk)
    pool = GlobalAvgPool(POOL_DIMS[backbone.family.layout])
    weight = next(trunk.parameters())
    fc = nn.Linear(
        _feature_width(trunk, pool, backbone), num_classes, device=weight.device, dtype=weight.dtype
    )
    truncated = Truncated(trunk, pool, fc)
    truncated.surgery = Surgery(backbone, 2, num_classes, cut, ("fc",))
    return truncated


def _trunk(model: nn.Module, cut: str) -> fx.GraphModule:
    """The backbone's own forward, traced in eval mode and stopped after the stage ``cut``.

    The stage's output is the last operation run inside it (as torchvision's feature extractor
    defines it). Everything after goes, checks included (ViT asserts the shape of each encoder
    layer's input, which would keep later layers running), so later stages are not even copied.
    The eval trace suits a frozen trunk: no train-only branches such as stochastic depth.
    """
    model.eval()
    graph = fx.Tracer(autowrap_modules=(math, torchvision.ops)).trace(model)
    inside = [node for node in graph.nodes if cut in _module_paths(node)]
    if not inside:
        raise LookupError(f"stage {cut!r} runs no operation in {type(model).__name__}'s forward")
    features = inside[-1]
    output = next(node for node in graph.nodes if node.op == "output")
    output.args = (features,)
    for node in reversed(list(graph.nodes)):
        if node is features:
            break
        if node is not output:
            graph.erase_node(node)
    trunk = fx.GraphModule(model, graph, class_name=f"{type(model).__name__}Trunk")
    trunk.graph.eliminate_dead_code()
    trunk.delete_all_unused_submodules()
    trunk.recompile()
    return trunk


def _module_paths(node: fx.Node) -> set[str]:
    """The dotted paths of the modules whose forward ran ``node`` (the tracer records them)."""
    return {path for path, _ in node.meta.get("nn_module_stack", {}).values()}


def _feature_width(trunk: nn.Module, pool: nn.Module, backbone: Backbone) -> int:
    """The pooled feature width at the cut, from a forward pass on the meta device (no compute)."""
    min_size, exact = backbone.input_size_rule(case=2)
    size = exact or max(min_size, 224)
    tensors = chain(trunk.named_parameters(), trunk.named_buffers())
    meta = {name: torch.empty_like(t, device="meta") for name, t in tensors}
    with torch.no_grad():
        features = torch.func.functional_call(trunk, meta, (torch.empty(1, 3, size, size, device="meta"),))
    return pool(features).shape[-1]


def _freeze_after(model: nn.Module, stage: str) -> frozenset[str]:
    """Freeze everything the forward runs after ``stage``, BatchNorm statistics included, and
    return the names of the parameters that still train: those of case 2's trunk at that stage,
    the very modules that run from the input through it."""
    tuned = {id(p) for p in _trunk(model, stage).parameters()}
    for layer in model.modules():
        own = list(layer.parameters(recurse=False))
        if type(layer) is nn.BatchNorm2d and own and not any(id(p) in tuned for p in own):
            layer.__class__ = FrozenBatchNorm2d
    for p in model.parameters():
        p.requires_grad_(id(p) in tuned)
    return frozenset(name for name, p in model.named_parameters() if id(p) in tuned)


def _freeze(module: nn.Module) -> None:
    """No gradients for ``module``, and its BatchNorm statistics fixed: eval mode for good."""
    module.requires_grad_(False)
    for layer in module.modules():
        if type(layer) is nn.BatchNorm2d:
            layer.__class__ = FrozenBatchNorm2d
            layer.train(False)


def _replace_layer(model: nn.Module, path: str, num_classes: int) -> None:
    """A freshly initialised layer of the same kind at ``path``, taking in_features from the old."""
    old = model.get_submodule(path)
    factory = {"device": old.weight.device, "dtype": old.weight.dtype}
    bias = old.bias is not None
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_classes, bias=bias, **factory)
    elif isinstance(old, nn.Conv2d):
        new = nn.Conv2d(
            old.in_channels, num_classes, old.kernel_size, old.stride, old.padding, bias=bias, **factory
        )
    else:
        raise TypeError(
            f"cannot replace {path} ({type(old).__name__}): only Linear and Conv2d heads are supported"
        )
    _set_submodule(model, path, new)


def _set_submodule(model: nn.Module, path: str, module: nn.Module | None) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent), name, module)


def _with_replaced(module: nn.Module, path: str, replacement: nn.Module) -> nn.Module:
    """A shallow copy of ``module`` with the submodule at ``path`` replaced; the rest shared."""
    clone = copy.copy(module)
    clone._modules = dict(module._modules)
    name, _, rest = path.partition(".")
    clone._modules[name] = _with_replaced(module._modules[name], rest, replacement) if rest else replacement
    return clone


def _surgery(model: nn.Module) -> Surgery:
    surgery = getattr(model, "surgery", None)
    if not isinstance(surgery, Surgery):
        raise TypeError(f"this {type(model).__name__} was not built by core.models.adapt.build_model")
    return surgery
