"""Grad-CAM on a run's exported program: heatmaps of any class, and overlays to show them.

The heatmaps come from ``model.pt2``, the file people download, not from a model rebuilt out of
the plan: it is the model whose answers the pages show, in every case (a case-2 trunk, a frozen
body before a trained head) it is one graph, and its operations keep their gradients. What it
lacks is a module to hook at the explained stage: its graph runs flat, but each operation
remembers the module path it ran in (``nn_module_stack``). So the stage's last operation gets an
identity module after it, and ``grad-cam`` hooks that module, as it would a stage of the eager
model. ``grad-cam`` does the rest: the gradients' spatial means as channel weights, the ReLU, the
upsampling to the input's size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import fx, nn

from core.artifacts.export import load_model
from core.artifacts.predict import ImageInput, image_to_input, open_image
from core.errors import TransferLabError
from core.explain.layer import ExplainedLayer, explained_layer
from core.models.preprocess import Preprocess
from core.storage import RunFiles, read_json

PROBE = "explained_stage"  # the identity module that grad-cam hooks, added to the program
IMAGE_WEIGHT = 0.5  # of the picture under the heat colours in an overlay


class ExplainError(TransferLabError, ValueError):
    """A class the model does not have, or a folder that holds no finished run."""


@dataclass(frozen=True)
class Heatmap:
    """Where the model looked for one class in one image."""

    label: str  # the class explained
    probability: float  # the model's probability of that class for this image
    predicted: str  # the class the model answers
    heat: np.ndarray  # [crop, crop] float32 in [0, 1], over the image as the model saw it
    overlay: Image.Image  # that image with the heat drawn over it, crop x crop pixels


class Explainer:
    """A run's exported model, probed at its explained stage, ready to draw heatmaps."""

    def __init__(
        self, model: nn.Module, pre: Preprocess, labels: Sequence[str], layer: ExplainedLayer
    ) -> None:
        """``model``: an exported program's module (``torch.export``'s ``.module()``)."""
        self.pre, self.labels, self.layer = pre, list(labels), layer
        probed = _Exported(probe(model, layer.stage.path).requires_grad_(False))  # no weight gradients
        self.cam = GradCAM(
            probed, [probed.program.get_submodule(PROBE)], reshape_transform=_GRID[layer.layout]
        )

    @classmethod
    def of_run(cls, run_dir: Path) -> Explainer:
        """The explainer of a finished run: its exported model, at the stage its plan's backbone,
        case and cut call for (``core.explain.layer``)."""
        from core.models.backbones import card

        files = RunFiles(Path(run_dir))
        plan = read_json(files.plan_file, {})
        if not isinstance(plan, dict) or "backbone" not in plan:
            raise ExplainError(f"{run_dir} holds no run's plan.json: is it a finished run's folder?")
        layer = explained_layer(card(plan["backbone"]), int(plan["case"]), plan.get("cut"))
        model, pre, labels = load_model(files.model_dir)
        return cls(model, pre, labels, layer)

    def heatmaps(
        self, inputs: torch.Tensor, classes: Sequence[int | None]
    ) -> tuple[np.ndarray, torch.Tensor]:
        """``(heat [N, H, W] in [0, 1], probabilities [N, classes])`` of preprocessed ``inputs``
        ``[N, 3, H, W]``, each explaining its class in ``classes`` (None: the predicted one)."""
        targets = [_Predicted() if c is None else ClassifierOutputTarget(c) for c in classes]
        # The input carries the gradient so that it reaches the stage behind a frozen body.
        heat = self.cam(inputs.clone().requires_grad_(True), targets)
        return heat.astype(np.float32), self.cam.outputs.detach().float().softmax(1)

    def explain(self, images: Sequence[ImageInput], label: str | None = None) -> list[Heatmap]:
        """A heatmap of each image for class ``label`` (None: the class the model predicts for
        it); ``ExplainError`` naming the model's classes for a label it does not have."""
        if label is not None and label not in self.labels:
            raise ExplainError(f"no class {label!r} in this model; choose one of: {', '.join(self.labels)}")
        chosen = None if label is None else self.labels.index(label)
        inputs = torch.stack([image_to_input(open_image(image), self.pre) for image in images])
        heat, probabilities = self.heatmaps(inputs, [chosen] * len(inputs))
        maps = []
        for x, h, p in zip(inputs, heat, probabilities):
            index = int(p.argmax()) if chosen is None else chosen
            maps.append(
                Heatmap(
                    label=self.labels[index],
                    probability=float(p[index]),
                    predicted=self.labels[int(p.argmax())],
                    heat=h,
                    overlay=overlay(x, h, self.pre),
                )
            )
        return maps


def probe(model: nn.Module, stage: str) -> fx.GraphModule:
    """``model`` (an exported program's module) with an identity module, ``PROBE``, on the
    output of ``stage``: the last operation that ran inside it, as ``core.models.adapt`` cuts.

    A stage is found by its path inside any module path (``layer4`` in ``trunk.layer4.1.relu``:
    case 2's trunk and cases 1 and 2's frozen body put the backbone one level down).
    """
    if not isinstance(model, fx.GraphModule):
        raise TypeError(f"expected an exported program's module, got {type(model).__name__}")
    inside = [node for node in model.graph.nodes if _ran_in(node, stage)]
    if not inside:
        raise LookupError(f"no operation of the exported model ran in stage {stage!r}")
    output = inside[-1]
    model.add_submodule(PROBE, nn.Identity())
    with model.graph.inserting_after(output):
        probed = model.graph.call_module(PROBE, (output,))
    output.replace_all_uses_with(probed, delete_user_cb=lambda user: user is not probed)
    model.recompile()
    return model


def overlay(x: torch.Tensor, heat: np.ndarray, pre: Preprocess) -> Image.Image:
    """The preprocessed input ``x`` ``[3, H, W]`` as a picture again, ``heat`` drawn over it."""
    mean, std = torch.tensor(pre.mean).view(3, 1, 1), torch.tensor(pre.std).view(3, 1, 1)
    picture = (x.detach() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
    return Image.fromarray(show_cam_on_image(picture, heat, use_rgb=True, image_weight=IMAGE_WEIGHT))


class _Exported(nn.Module):
    """An exported program as grad-cam may hold it: it sets eval mode, which an exported program
    refuses, though its mode was fixed when it was exported (eval, ``portable_copy``)."""

    def __init__(self, program: fx.GraphModule) -> None:
        super().__init__()
        self.program = program

    def train(self, mode: bool = True) -> _Exported:
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)


class _Predicted:
    """grad-cam's target for the class the model predicts: the largest logit."""

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.max()


def _ran_in(node: fx.Node, stage: str) -> bool:
    wanted = stage.split(".")
    for path, _ in node.meta.get("nn_module_stack", {}).values():
        parts = path.split(".")
        if any(parts[i : i + len(wanted)] == wanted for i in range(len(parts) - len(wanted) + 1)):
            return True
    return False


def _tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
    """ViT's ``[N, 1 + side², width]`` as ``[N, width, side, side]``, the class token dropped."""
    patches = tokens[:, 1:, :]
    side = math.isqrt(patches.shape[1])
    return patches.reshape(len(patches), side, side, -1).permute(0, 3, 1, 2)


_GRID = {
    "nchw": None,
    "nhwc": lambda x: x.permute(0, 3, 1, 2),
    "tokens": _tokens_to_grid,
}
