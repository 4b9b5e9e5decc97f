"""A trained model as files that run without our code: ``model/`` of a run directory.

``model.pt2`` is a ``torch.export`` program with a dynamic batch dimension (TorchScript is
deprecated in this torch, and scripting fails on EfficientNet-Lite0); ``labels.json`` names its
outputs; ``preprocess.json`` says how to turn an image into its input. ``model.onnx`` is optional.
"""

from __future__ import annotations

import copy
import importlib.util
import io
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from core.artifacts.card import LABELS_FILE, PREPROCESS_FILE
from core.errors import TransferLabError
from core.models.preprocess import Preprocess
from core.storage import read_json, staged_folder, write_bytes_atomic, write_json

PROGRAM_FILE = "model.pt2"
ONNX_FILE = "model.onnx"
MAX_BATCH = 4096
ONNX_PACKAGES = ("onnx", "onnxscript")


class ExportError(TransferLabError, RuntimeError):
    """A model directory that is missing pieces, or an export this machine cannot do."""


def export_model(model: nn.Module, pre: Preprocess, labels: Sequence[str], model_dir: Path) -> Path:
    """Write ``model.pt2``, ``labels.json`` and ``preprocess.json`` to ``model_dir``, all three
    or none: they are written beside it and the folder is renamed into place.

    The program takes float32 images ``[N, 3, crop, crop]``, normalised as ``preprocess.json``
    says, for any ``N``; it returns logits ``[N, len(labels)]``. Exported from a float32, CPU,
    contiguous copy so that it runs anywhere, whatever the training device and precision were.
    """
    model_dir = Path(model_dir)
    portable = portable_copy(model)
    example = torch.zeros(2, 3, pre.crop, pre.crop)  # export specialises a batch of 1; 2 generalises
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    program = torch.export.export(portable, (example,), dynamic_shapes=({0: batch},))
    # Saved to memory first: on a full disk torch's own writer fails with a cryptic error and
    # then aborts the process as it closes the file, while a plain write raises ENOSPC.
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    with staged_folder(model_dir) as staging:
        write_bytes_atomic(staging / PROGRAM_FILE, buffer.getvalue())
        write_json(staging / LABELS_FILE, list(labels))
        write_json(staging / PREPROCESS_FILE, pre.to_dict())
    return model_dir / PROGRAM_FILE


def portable_copy(model: nn.Module) -> nn.Module:
    """What is exported: a float32, CPU, contiguous copy of ``model`` in eval mode. The final
    metrics are measured on it too, so that they are the exported model's numbers."""
    return copy.deepcopy(model).float().cpu().to(memory_format=torch.contiguous_format).eval()


def load_model(model_dir: Path) -> tuple[nn.Module, Preprocess, list[str]]:
    """The exported program as a callable module, its preprocessing, and its labels."""
    model_dir = Path(model_dir)
    missing = [n for n in (PROGRAM_FILE, LABELS_FILE, PREPROCESS_FILE) if not (model_dir / n).is_file()]
    if missing:
        raise ExportError(f"{model_dir} lacks {', '.join(missing)}: is it the model/ of a finished run?")
    program = torch.export.load(model_dir / PROGRAM_FILE)
    pre = Preprocess.from_dict(read_json(model_dir / PREPROCESS_FILE))
    return program.module(), pre, list(read_json(model_dir / LABELS_FILE))


def onnx_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ONNX_PACKAGES)


def export_onnx(model_dir: Path) -> Path:
    """Add ``model.onnx`` (dynamic batch, input ``images``, output ``logits``) next to model.pt2."""
    if not onnx_available():
        raise ExportError(
            f"ONNX export needs the packages {' and '.join(ONNX_PACKAGES)}: "
            f"pip install {' '.join(ONNX_PACKAGES)}"
        )
    model_dir = Path(model_dir)
    load_model(model_dir)  # the same check for missing pieces
    program = torch.export.load(model_dir / PROGRAM_FILE)
    path = model_dir / ONNX_FILE
    # One self-contained file: external weight files only matter past ONNX's 2 GB limit.
    torch.onnx.export(
        program,
        f=str(path),
        input_names=["images"],
        output_names=["logits"],
        dynamo=True,
        external_data=False,
        verbose=False,  # its progress lines would land in the CLI's --json output
    )
    return path
