"""Case 3's stages, and the optimiser each stage trains with.

Case 3 trains its new head alone for its first epoch(s) (``freeze_epochs``, as fastai's
``fine_tune`` does), then the whole network with the pre-trained layers at a tenth of the head's
learning rate; case 4 trains the whole network from the start. The estimate times the same
stages, so it builds their parameter groups here too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from core.models.adapt import param_groups
from core.training.loop import Optimisation
from core.training.plan import Plan


@dataclass(frozen=True)
class Stage:
    """A stretch of epochs with one optimiser: case 3 trains its new head alone first (its
    ``freeze_epochs``), then the whole network; every other case has a single stage."""

    name: str
    epochs: range
    head_only: bool = False


def stages(plan: Plan) -> list[Stage]:
    """Case 3's two stages, or the whole network's one (cases 1 and 2 fit their head instead)."""
    first = plan.head_only_epochs
    whole = Stage("whole network", range(first, plan.epochs))
    return [Stage("new head alone", range(first), head_only=True), whole] if first else [whole]


def stage_groups(model: nn.Module, plan: Plan, head_only: bool) -> list[dict]:
    """A stage's parameter groups (``base_lr`` set), with ``requires_grad`` matching them: case
    3's first stage trains the new head alone.

    Alone but for BatchNorm, as fastai's ``freeze`` leaves it: normalising with batch statistics
    from the start means nothing shifts under the head when the body joins in.
    """
    groups = param_groups(model, plan.lr, plan.body_learning_rate)
    if head_only:
        groups = _head_and_norms(model, groups)
    training = {id(p) for g in groups for p in g["params"]}
    for p in model.parameters():  # no gradients at all for the waiting body
        p.requires_grad_(id(p) in training)
    for g in groups:
        g["base_lr"] = g["lr"]
    return groups


def _head_and_norms(model: nn.Module, groups: list[dict]) -> list[dict]:
    """The head's group and, at the body's rate, the body's BatchNorm weights and biases."""
    head = next(g for g in groups if g["name"] == "head")
    body = [g for g in groups if g["name"] == "body"]
    if not body:
        return [head]
    norm_ids = {
        id(p)
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for p in m.parameters(recurse=False)
    }
    norms = [p for p in body[0]["params"] if id(p) in norm_ids]
    return [head, {**body[0], "name": "body_norms", "params": norms}]


def head_lr(opt: Optimisation) -> float:
    """The new head's learning rate: the highest of the groups in every case's scheme."""
    return max(group["lr"] for group in opt.optimizer.param_groups)


def optimizer_for(name: str, groups: list[dict], weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(groups, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(groups, weight_decay=weight_decay)
    return torch.optim.AdamW(groups, weight_decay=weight_decay)
