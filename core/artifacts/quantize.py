"""A smaller, faster copy of an exported model: ``model.int8.onnx``, checked before it is kept.

Post-training static quantisation of ``model.onnx`` with onnxruntime's own tools: weights and
activations become int8, with activation ranges calibrated on a bounded sample of the run's
training images, prepared exactly as Predict prepares an image. The quantised graph is QDQ
(QuantizeLinear/DequantizeLinear pairs around float operators, which onnxruntime fuses into
integer kernels) with per-channel weight scales. Measured on EfficientNet-Lite0 trained on the
digits sample: one scale per tensor took validation accuracy from 94% to 33% (its depthwise
convolutions' channels have very different ranges), per channel to 93%; the QOperator format
gave the same accuracy and the same speed-up, so the QDQ graph, which other runtimes read too,
is kept.

A quantised model can be quietly worse, so it is checked on the run's validation split against
the float model, both in onnxruntime on this CPU: accuracy of each, how often they agree, and
latency at batch 1. The figures go to ``int8.json`` beside the file; a model whose accuracy
drops by more than the tolerance is refused, and nothing is left behind.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core import machine
from core.artifacts.card import INT8_CHECK_FILE, INT8_MAX_DROP, ModelCard
from core.artifacts.export import ONNX_FILE, ExportError, export_onnx
from core.artifacts.model_card import note_int8
from core.artifacts.predict import image_to_input
from core.data.images import decode_image
from core.storage import write_bytes_atomic, write_json

INT8_FILE = "model.int8.onnx"
# Calibration needs the range of each activation, not a pass over every image: a few hundred
# images cover it, each a forward pass that also takes every tensor's minimum and maximum.
CALIBRATION_IMAGES = 256
BATCH = 16
LATENCY_RUNS = 30  # batch-1 passes timed per model, after warming up; the median is kept

Progress = Callable[[int, int], None]  # (images done, images in all)
PhaseProgress = Callable[[str], Progress]  # a progress callback for the named phase


class QuantizeError(ExportError):
    """An int8 model refused: it lost more accuracy than allowed, or could not be built."""


@dataclass(frozen=True)
class Int8Check:
    """The int8 model measured against the float one on the run's validation images."""

    images: int
    fp32_accuracy: float
    int8_accuracy: float
    agreement: float  # fraction of images where both predict the same class
    fp32_latency_ms: float  # median, batch 1, onnxruntime on this CPU
    int8_latency_ms: float
    fp32_bytes: int
    int8_bytes: int
    calibration_images: int
    max_drop: float
    cpu: str
    threads: int

    @property
    def drop(self) -> float:
        """Accuracy lost, as a fraction (negative where int8 did better)."""
        return self.fp32_accuracy - self.int8_accuracy

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drop": self.drop, "format": "onnx QDQ, int8 per-channel weights"}


def export_int8(
    model_dir: Path,
    calibration: Sequence[Path],
    validation: Sequence[tuple[Path, str]],
    max_drop: float = INT8_MAX_DROP,
    progress: PhaseProgress | None = None,
) -> Int8Check:
    """Quantise ``model_dir``'s ONNX model (exported first where missing) on the images at
    ``calibration``, check it on ``validation`` (image, class name) pairs, and keep
    ``model.int8.onnx`` and ``int8.json`` when its accuracy drops by at most ``max_drop``;
    ``QuantizeError`` naming both accuracies otherwise. ``progress(phase)`` gives a callback
    for ``calibrating`` and ``checking``."""
    model_dir = Path(model_dir)
    card = ModelCard.read(model_dir)
    if not calibration or not validation:
        raise QuantizeError("int8 needs training images to calibrate on and validation images to check on")
    fp32 = model_dir / ONNX_FILE
    if not fp32.is_file():
        export_onnx(model_dir)
    sample = bounded_sample(calibration, CALIBRATION_IMAGES)
    with tempfile.TemporaryDirectory(dir=model_dir, prefix=".int8-") as staging:
        int8 = Path(staging) / INT8_FILE
        quantize(fp32, int8, card, sample, _phase(progress, "calibrating"))
        check = check_int8(fp32, int8, card, validation, _phase(progress, "checking"))
        check = replace(check, calibration_images=len(sample), max_drop=max_drop)
        if check.drop > max_drop:
            raise QuantizeError(
                f"int8 refused: validation accuracy {check.int8_accuracy:.1%} against {check.fp32_accuracy:.1%} "
                f"in fp32, a drop of {check.drop:.1%} past the {max_drop:.1%} allowed (--max-drop to accept more)"
            )
        write_bytes_atomic(model_dir / INT8_FILE, int8.read_bytes())
    write_json(model_dir / INT8_CHECK_FILE, check.to_dict())
    note_int8(model_dir, check.to_dict())
    return check


def bounded_sample(paths: Sequence[Path], limit: int) -> list[Path]:
    """At most ``limit`` of ``paths``, spread evenly over them: training lists run class by
    class, so an even stride samples every class in proportion."""
    if len(paths) <= limit:
        return list(paths)
    return [paths[round(i * len(paths) / limit)] for i in range(limit)]


def quantize(fp32: Path, int8: Path, card: ModelCard, images: Sequence[Path], progress: Progress) -> None:
    """Write the static int8 (QDQ, per-channel) quantisation of ``fp32`` to ``int8``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = _batches(images, card, progress)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    # Shape inference and graph optimisation first, as onnxruntime advises: constant folding
    # and fused BatchNorms leave fewer, better-calibrated tensors.
    prepared = int8.with_suffix(".prepared.onnx")
    quant_pre_process(str(fp32), str(prepared))
    quantize_static(
        str(prepared),
        str(int8),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=head_nodes(prepared),
    )
    prepared.unlink()


# Where a network's body ends and its new layer begins: pooling over the image, or (ViT) taking
# the class token.
BODY_ENDS = {"GlobalAveragePool", "ReduceMean", "Gather", "Conv"}


def head_nodes(model: Path) -> list[str]:
    """The nodes after the body's last pooling: the new layer and its standardisation, kept in
    float. Standardising divides by each feature's spread on the training images, so a feature
    that barely varied there can be far out on another image; one int8 range for all of them
    then flattened every other feature, and the copy fell to chance (47.5% against 100% on the
    faces sample) on some runs and not others. It is a few thousand weights, nothing to save."""
    import onnx

    nodes = onnx.load(str(model), load_external_data=False).graph.node
    head: list[str] = []
    for node in reversed(nodes):
        if node.op_type in BODY_ENDS:
            break
        head.append(node.name)
    return head


def check_int8(
    fp32: Path,
    int8: Path,
    card: ModelCard,
    validation: Sequence[tuple[Path, str]],
    progress: Progress,
) -> Int8Check:
    """Both models' accuracy and agreement on ``validation``, their batch-1 latency, their sizes
    (``calibration_images`` and ``max_drop`` are left for the caller to fill)."""
    labels = np.array([card.labels.index(name) for _, name in validation])
    sessions = _session(fp32), _session(int8)
    predicted: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
    for batch in _batches([path for path, _ in validation], card, progress):
        for session, out in zip(sessions, predicted):
            out.append(session.run(None, batch)[0].argmax(1))
    fp32_top, int8_top = (np.concatenate(out) for out in predicted)
    one = {"images": batch["images"][:1]}
    return Int8Check(
        images=len(validation),
        fp32_accuracy=float((fp32_top == labels).mean()),
        int8_accuracy=float((int8_top == labels).mean()),
        agreement=float((fp32_top == int8_top).mean()),
        fp32_latency_ms=_latency_ms(sessions[0], one),
        int8_latency_ms=_latency_ms(sessions[1], one),
        fp32_bytes=fp32.stat().st_size,
        int8_bytes=int8.stat().st_size,
        calibration_images=0,
        max_drop=0.0,
        cpu=machine.cpu().name,
        threads=torch.get_num_threads(),
    )


def _batches(images: Sequence[Path], card: ModelCard, progress: Progress) -> Iterator[dict[str, np.ndarray]]:
    """``{"images": [n, 3, crop, crop]}`` feeds, prepared as Predict prepares an image."""
    for start in range(0, len(images), BATCH):
        chunk = images[start : start + BATCH]
        inputs = torch.stack([image_to_input(decode_image(path), card.pre) for path in chunk])
        yield {"images": inputs.numpy()}
        progress(start + len(chunk), len(images))


def _session(path: Path) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _latency_ms(session: Any, feed: dict[str, np.ndarray]) -> float:
    for _ in range(3):  # the first passes allocate and pick kernels
        session.run(None, feed)
    times = []
    for _ in range(LATENCY_RUNS):
        started = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def _phase(progress: PhaseProgress | None, phase: str) -> Progress:
    return progress(phase) if progress is not None else lambda *_: None
