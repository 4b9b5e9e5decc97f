"""How forward-only passes run on this machine: torch itself, or an inference runtime, chosen by
timing each on the pass's own batches.

Frozen bodies (cases 1 and 2), the analysis's probe and exported models only ever run forward,
and torch's eager CPU kernels are slow at what most of these networks are made of (depthwise and
pointwise convolutions): on 2 cores EfficientNet-Lite0's body ran several times faster in
OpenVINO or ONNX Runtime than in torch, in fp32 as in bf16 (bench/README.md has the figures).
Which runtime wins depends on the CPU (AVX2 only, AVX-512, AMX), the network and the threads,
so an ``Engine`` measures instead of guessing, on the pass's own batches and keeping every
output it times. On its first batch torch runs the first few inputs: their outputs are the
reference every runtime must match, and their rate tells whether what is left of the pass
would repay converting. If it would, the module is converted (through ONNX, cached on disk by
content), each runtime runs the first batch (its outputs checked against torch's), and the
runtimes that agree, with torch where it came close, take the next batches in turn until each
is timed on two; the fastest runs the rest. The choice is remembered beside the graph, for that
batch shape, thread count, precision, CPU and runtime versions: the next pass of the same
network (the next analysis of another data set, say) builds only the runtime that won, without
timing anything. ``Engine.choice`` says what it chose and why, for the run's provenance.

On a GPU torch runs every pass; batches are then padded to one shape, since cuDNN's autotuner
(``cudnn.benchmark``) tunes every convolution again for each new input shape.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.metadata
import io
import json
import os
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core import machine, storage

PRECISION_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# A runtime is worth converting to only when torch would need at least this long for what is
# left of the pass: exporting (0.5-1.4 s), building (0.05-0.7 s) and a first call of each runtime
# cost one to two seconds on 2 cores, and what they measure is remembered, so that later passes
# of the network gain without paying them again. torch's rate on a pass's first inputs is
# optimistic: the analysis's BatchNorm pass of 128 images read 45-59 images/s there against 25
# on whole batches, and stayed in torch at 3 s, where OpenVINO ran it at 110.
MIN_SAVING_S = 2.0
# A remembered runtime is built again (from its cached graph) only where, at the rates measured,
# it would save this long over torch on what is left of the pass: a build costs 0.05 s (ONNX
# Runtime) to 0.7 s (OpenVINO), measured on 2 cores.
MIN_BUILD_SAVING_S = 1.0
# torch runs this many inputs of a pass's first batch: the reference every runtime's outputs are
# checked against, and torch's rate. Where torch runs in bf16, its float32 outputs for them cost
# one more small pass.
CHECKED_INPUTS = 8
# Whole batches each contender is timed on, the fastest of them counting: on a busy machine one
# batch can be slowed by another process, and the choice made from them is remembered.
TIMED_BATCHES = 2
# torch is timed on whole batches too only where its rate on the first inputs came within this
# fraction of a runtime's first call; elsewhere (4 to 8 times slower on 2 AVX2 cores, measured)
# a whole batch of it would only cost time.
TORCH_CONTENDS = 0.5
# A runtime's outputs must match torch's float32 outputs on the same batch to within this
# fraction of their largest magnitude (float32 runtimes agree to about 1e-5, measured), or, in a
# pass that torch runs in reduced precision, to within twice torch's own distance from them.
AGREEMENT = 1e-3
CACHED_GRAPHS = 16  # ONNX graphs kept on disk, newest first
# The runtimes an Engine may try besides torch, by default all of them; an operator can narrow
# them (a runtime that misbehaves on some machine) or turn them off with "torch", as the
# benchmarks do for their baselines.
RUNTIMES_ENV = "TRANSFER_LAB_RUNTIMES"
RUNTIMES = ("onnxruntime", "openvino")
Outputs = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class Accelerator:
    """How tensors are placed and computed: one record handed to every pass and to the loop."""

    device: torch.device
    precision: str  # "fp32" | "bf16" | "fp16"
    channels_last: bool
    # cuDNN's autotuner (cudnn.benchmark) tunes every convolution again for each new input shape:
    # where it runs, forward-only passes pad their batches to one shape.
    fixed_shapes: bool = False

    @property
    def pin_memory(self) -> bool:
        return self.device.type == "cuda"

    @property
    def needs_grad_scaler(self) -> bool:
        """fp16's narrow range underflows small gradients unless the loss is scaled."""
        return self.precision == "fp16"

    def autocast(self) -> AbstractContextManager:
        dtype = PRECISION_DTYPES[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=self.pin_memory)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def prepare(self, module: nn.Module) -> nn.Module:
        module = module.to(self.device)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        return module


CPU_FP32 = Accelerator(torch.device("cpu"), "fp32", channels_last=False)


@dataclass(frozen=True)
class Choice:
    """Which runtime ran a pass, what each candidate measured, and why."""

    runtime: str
    reason: str
    images_per_s: dict[str, float] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)  # candidate -> why it could not run
    threads: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "reason": self.reason,
            "images_per_s": {name: round(rate, 1) for name, rate in self.images_per_s.items()},
            "rejected": dict(self.rejected),
            "threads": self.threads,
        }


@dataclass
class _Trial:
    """The contenders for a pass (runtimes that agreed with torch, and torch where it came
    close) taking its whole batches in turn, each timed on TIMED_BATCHES of them: every output
    timed is kept, so measuring costs no pass of its own."""

    runners: dict[str, Callable[[torch.Tensor], Outputs]]
    rates: dict[str, list[float]]  # images/s of each call, the cold first one included
    rejected: dict[str, str]
    size: int  # a whole batch
    threads: int
    remember: Callable[[Choice], None]  # keeps the choice for later passes of the network

    def next(self) -> str:
        return min(self.runners, key=lambda name: len(self.rates[name]))

    def leader(self) -> str:
        return max(self.runners, key=lambda name: max(self.rates[name]))

    def timed(self) -> int:
        """Whole batches every contender has been timed on since its first call."""
        return min(len(self.rates[name]) - 1 for name in self.runners)


class Engine:
    """Runs ``module`` (in eval mode, returning a tensor or a tuple of tensors) over the batches
    of one or more passes that hold ``images`` inputs in all; call it with each batch in turn.

    Every output has one row per input (so a batch can be padded, cut or split). Outputs are a
    tuple, on the accelerator's device, in the dtype the runtime gives (bf16
    features stay bf16 in torch). ``runtimes`` names the candidates besides torch (by default
    ``configured_runtimes()``; empty: torch alone).
    """

    def __init__(
        self,
        module: nn.Module,
        accel: Accelerator,
        images: int,
        runtimes: Sequence[str] | None = None,
    ) -> None:
        self.module, self.accel, self.images = module, accel, images
        runtimes = configured_runtimes() if runtimes is None else tuple(runtimes)
        self.runtimes = runtimes if accel.device.type == "cpu" else ()
        self.done = 0
        self._choice: Choice | None = None
        self._chosen: Callable[[torch.Tensor], Outputs] | None = None
        self._trial: _Trial | None = None

    @property
    def choice(self) -> Choice | None:
        """What runs the pass, and why (None before its first batch). A pass that ended while
        its contenders were still being timed chooses from the batches they were timed on."""
        if self._trial is not None:
            self._settle()
        return self._choice

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor, pad_to: int | None = None) -> Outputs:
        """The module's outputs for ``batch``, a pass's batch of ``pad_to`` inputs or its smaller
        last one. Where shapes must stay fixed (CUDA, or a runtime compiled for one batch size),
        a smaller batch is padded to ``pad_to`` and the outputs are cut back."""
        remaining = self.images - self.done
        self.done += len(batch)
        size = pad_to or len(batch)
        if self.accel.fixed_shapes:
            if self._choice is None:
                self._choice = Choice("torch", f"on {self.accel.device.type} torch runs every pass")
            return _padded(self._torch, batch, size)
        if self._chosen is None:
            return self._choose(batch, remaining)
        if self._trial is not None:
            return self._contend(batch)
        return self._chosen(batch)

    def _torch(self, batch: torch.Tensor) -> Outputs:
        with self.accel.autocast():
            return _as_tuple(self.module(self.accel.to_device(batch)))

    def _choose(self, batch: torch.Tensor, remaining: int) -> Outputs:
        """``batch``'s outputs, having chosen what runs the pass: torch, or the fastest runtime
        whose outputs match torch's. That is the one measured here before for the same network,
        batch and settings, or else one measured from this batch on, with ``remaining`` images
        (this batch's included) left in the pass."""
        threads = torch.get_num_threads()
        self._chosen = self._torch
        if not self.runtimes:
            self._choice = Choice("torch", "no other runtime allowed", threads=threads)
            return self._torch(batch)
        if remaining <= len(batch):  # the whole pass is this batch: no later one to be faster
            self._choice = Choice("torch", "one batch: nothing left to run faster", threads=threads)
            return self._torch(batch)
        key = content_key(self.module, batch.shape[1:])
        choices = RememberedChoices(runtimes_cache_dir() / f"{key}.choices.json")
        settings = self._settings(tuple(batch.shape), threads)
        remembered = choices.get(settings)
        if remembered is not None and self._take(remembered, batch, key, remaining):
            return self._chosen(batch)
        first, rest = batch[:CHECKED_INPUTS], batch[CHECKED_INPUTS:]
        started = time.perf_counter()
        reference = self._torch(first)  # cold, as every contender's first call is
        rate = len(first) / max(time.perf_counter() - started, 1e-9)
        if (remaining - len(first)) / rate < MIN_SAVING_S:
            self._choice = Choice("torch", "too few images left to convert", {"torch": rate}, threads=threads)
        else:
            outputs = self._start_trial(batch, key, reference, rate, functools.partial(choices.put, settings))
            if outputs is not None:
                return outputs
        return _joined(reference, self._torch(rest)) if len(rest) else reference

    def _take(self, remembered: Choice, batch: torch.Tensor, key: str, remaining: int) -> bool:
        """Run on the choice measured here before, where its runtime still builds: measuring
        again would cost torch batches and a build of every runtime, seconds for each network
        of an analysis. A pass too short to repay the build, at the rates measured, stays in
        torch."""
        before = f"measured fastest for this network here before ({remembered.reason})"
        if remembered.runtime == "torch" or _saving(remembered, remaining) < MIN_BUILD_SAVING_S:
            why = before if remembered.runtime == "torch" else "too few images left to convert"
            self._choice = replace(remembered, runtime="torch", reason=why)
            return True
        try:
            graph = onnx_graph(self.module, batch, key)
            runner = self._builders(graph, tuple(batch.shape), remembered.threads)[remembered.runtime]()
        except Exception:  # noqa: BLE001 - gone, or no longer building here: measure again
            return False
        self._chosen = functools.partial(_padded, runner, size=len(batch))
        self._choice = replace(remembered, reason=before)
        return True

    def _start_trial(
        self,
        batch: torch.Tensor,
        key: str,
        reference: Outputs,
        torch_rate: float,
        remember: Callable[[Choice], None],
    ) -> Outputs | None:
        """``batch``'s outputs from the first runtime whose outputs match torch's ``reference``
        (for its first inputs), every runtime having run once and been checked; the ones that
        agree (with torch, where ``torch_rate`` came close to theirs) then contend for the next
        batches, and the choice they lead to is passed to ``remember``. None where no runtime
        could run it: torch runs the pass."""
        threads = torch.get_num_threads()
        rates, rejected = {"torch": [torch_rate]}, {}
        try:
            graph = onnx_graph(self.module, batch, key)
        except Exception as exc:  # noqa: BLE001 - a module the exporter cannot trace stays with torch
            self._choice = Choice(
                "torch", f"the ONNX export failed ({_line(exc)})", {"torch": torch_rate}, threads=threads
            )
            return None
        exact, allowed = self._allowed_gaps(batch[: len(reference[0])], reference)
        runners: dict[str, Callable[[torch.Tensor], Outputs]] = {}
        outputs = None
        for name, build in self._builders(graph, tuple(batch.shape), threads).items():
            try:
                runner = functools.partial(_padded, build(), size=len(batch))
                rate, got = _timed(runner, batch)  # its first call: runtimes allocate and tune on it
                _check_agreement(got, exact, allowed)
            except Exception as exc:  # noqa: BLE001 - not installed, not convertible, or disagreeing
                rejected[name] = _line(exc)
                continue
            runners[name], rates[name] = runner, [rate]
            outputs = got if outputs is None else outputs
        if outputs is None:
            self._choice = Choice(
                "torch", "no runtime ran it as torch does", {"torch": torch_rate}, rejected, threads
            )
            return None
        if torch_rate >= TORCH_CONTENDS * max(rates[name][0] for name in runners):
            runners["torch"] = self._torch
        self._trial = _Trial(runners, rates, rejected, len(batch), threads, remember)
        return outputs

    def _contend(self, batch: torch.Tensor) -> Outputs:
        """``batch``'s outputs from the contender timed on the fewest batches so far (from the
        one leading, for a smaller last batch); once each is timed on TIMED_BATCHES, or the
        pass is over, the fastest is chosen."""
        trial = self._trial
        if len(batch) == trial.size:
            name = trial.next()
            rate, outputs = _timed(trial.runners[name], batch)
            trial.rates[name].append(rate)
        else:  # padded or not, a smaller batch says nothing of a rate
            outputs = trial.runners[trial.leader()](batch)
        if trial.timed() >= TIMED_BATCHES or self.done >= self.images:
            self._settle()
        return outputs

    def _settle(self) -> None:
        trial, self._trial = self._trial, None
        best = trial.leader()
        self._chosen = trial.runners[best]
        rates = {name: max(samples) for name, samples in trial.rates.items()}
        self._choice = Choice(
            best, "the fastest on this machine's own batches", rates, trial.rejected, trial.threads
        )
        if trial.timed():  # a choice from first calls alone is not kept for later passes
            trial.remember(self._choice)

    def _settings(self, shape: tuple[int, ...], threads: int) -> dict[str, Any]:
        """What a remembered choice holds for besides the graph: the batch, the threads, the
        precision, the runtimes allowed and their versions, and the CPU as torch and oneDNN see it."""
        return {
            "shape": list(shape),
            "threads": threads,
            "precision": self.accel.precision,
            "runtimes": {name: _version(name) for name in self.runtimes},
            "cpu": machine.cpu().name,
            "capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        }

    def _allowed_gaps(self, batch: torch.Tensor, reference: Outputs) -> tuple[Outputs, list[float]]:
        """torch's float32 outputs for ``batch`` (the first rows of ``reference``'s batch), and
        how far from each a runtime's may lie."""
        reference = tuple(output[: len(batch)] for output in reference)
        exact = reference
        if self.accel.precision != "fp32":
            exact = _as_tuple(self.module(self.accel.to_device(batch)))  # no autocast: float32
        gaps = []
        for ours, theirs in zip(reference, exact, strict=True):
            ours, theirs = ours.float().cpu(), theirs.float().cpu()
            scale = float(theirs.abs().max()) if theirs.numel() else 0.0
            noise = float((ours - theirs).abs().max()) if theirs.numel() else 0.0
            gaps.append(max(AGREEMENT * max(scale, 1e-6), 2 * noise))
        return exact, gaps

    def _builders(
        self, graph: bytes, shape: tuple[int, ...], threads: int
    ) -> dict[str, Callable[[], Callable]]:
        builders: dict[str, Callable[[], Callable]] = {}
        if "onnxruntime" in self.runtimes:
            builders["onnxruntime"] = lambda: OnnxRuntime(graph, threads)
        if "openvino" in self.runtimes:
            builders["openvino"] = lambda: OpenVino(graph, shape, threads, "f32")
            if self.accel.precision == "bf16":  # the plan allows bf16: OpenVINO runs it on AMX
                builders["openvino-bf16"] = lambda: OpenVino(graph, shape, threads, "bf16")
        return builders


class OnnxRuntime:
    """An ONNX graph in ONNX Runtime's CPU provider."""

    def __init__(self, graph: bytes, threads: int) -> None:
        onnxruntime = _imported("onnxruntime")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        # Its threads otherwise spin between operators, which on a graph with many outputs (the
        # analysis's probe) made a call 10x slower than the one before it, measured on 2 cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 4  # its failures come back as exceptions; its warnings are noise
        self.session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, batch: torch.Tensor) -> Outputs:
        arrays = self.session.run(None, {self.input: _array(batch)})
        return tuple(torch.from_numpy(array) for array in arrays)


class OpenVino:
    """An ONNX graph compiled by OpenVINO for the CPU and one input shape (a batch whose size
    changes would build its kernels again), in f32 or, on bf16 units, bf16."""

    def __init__(self, graph: bytes, shape: tuple[int, ...], threads: int, precision: str) -> None:
        core = _openvino_core()
        model = core.read_model(graph, b"")
        model.reshape(list(shape))
        config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision}
        self.compiled = core.compile_model(model, "CPU", config | {"PERFORMANCE_HINT": "LATENCY"})
        self.request = self.compiled.create_infer_request()

    def __call__(self, batch: torch.Tensor) -> Outputs:
        self.request.infer({0: _array(batch)})
        # The request reuses its output buffers: copy them out before the next batch.
        return tuple(
            torch.from_numpy(self.request.get_output_tensor(i).data.copy())
            for i in range(len(self.compiled.outputs))
        )


def configured_runtimes() -> tuple[str, ...]:
    """``TRANSFER_LAB_RUNTIMES``: a comma-separated choice among RUNTIMES, or ``torch`` for none."""
    value = os.environ.get(RUNTIMES_ENV, "").strip()
    if not value:
        return RUNTIMES
    if value == "torch":
        return ()
    names = tuple(name.strip() for name in value.split(","))
    unknown = [name for name in names if name not in RUNTIMES]
    if unknown:
        raise ValueError(
            f"{RUNTIMES_ENV}={value!r} names {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(RUNTIMES)}, or torch for none"
        )
    return names


@dataclass(frozen=True)
class RememberedChoices:
    """The runtime choices measured for one network (``KEY.choices.json`` beside its graph),
    one for each batch shape and setting it ran under; an unreadable file remembers none."""

    path: Path

    def get(self, settings: dict[str, Any]) -> Choice | None:
        stored = self._read().get(_settings_key(settings))
        try:
            return None if stored is None else Choice(**stored)
        except TypeError:
            return None

    def put(self, settings: dict[str, Any], choice: Choice) -> None:
        choices = self._read() | {_settings_key(settings): choice.to_dict()}
        with contextlib.suppress(OSError):  # a cache that cannot be written only costs time
            storage.write_bytes_atomic(self.path, json.dumps(choices, indent=1).encode())

    def _read(self) -> dict[str, Any]:
        try:
            choices = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return choices if isinstance(choices, dict) else {}


def _settings_key(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def onnx_graph(module: nn.Module, batch: torch.Tensor, key: str | None = None) -> bytes:
    """``module`` as an ONNX graph with a dynamic batch, exported once per content and input
    size (``key``, its ``content_key``, where the caller has it) and kept under the home
    folder's ``cache/runtimes/``: the newest CACHED_GRAPHS, with their remembered choices."""
    with torch.inference_mode(False), torch.no_grad():
        example = batch[:2].detach().clone().float().cpu().contiguous()
        folder = runtimes_cache_dir()
        path = folder / f"{key or content_key(module, example.shape[1:])}.onnx"
        if path.is_file():
            path.touch()
            return path.read_bytes()
        graph = _export(module, example)
    folder.mkdir(parents=True, exist_ok=True)
    storage.write_bytes_atomic(path, graph)
    for stale in sorted(folder.glob("*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)[CACHED_GRAPHS:]:
        stale.unlink(missing_ok=True)
        stale.with_suffix(".choices.json").unlink(missing_ok=True)
    return graph


def runtimes_cache_dir() -> Path:
    return storage.cache_dir() / "runtimes"


def content_key(module: nn.Module, input_shape: Sequence[int]) -> str:
    """Names a module by what it computes: its structure, code, weights and buffers, the input
    size and the torch version (the exporter's output may change with it)."""
    digest = hashlib.sha256(f"{torch.__version__}\0{tuple(input_shape)}\0{module!r}".encode())
    digest.update(str(getattr(module, "code", "")).encode())
    for name, tensor in module.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()[:32]


class _Traceable(nn.Module):
    """The module as the tracer wants it: an exported program's module refuses ``train()``,
    which the exporter calls on what it exports."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def train(self, mode: bool = True) -> _Traceable:
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        return self.module(x)


def _export(module: nn.Module, example: torch.Tensor) -> bytes:
    """The TorchScript-based exporter: a second or two for a small CNN where the torch.export-based
    one takes several, and it traces through forward hooks (the analysis's probe is made of them)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and constant-folding notes
        torch.onnx.export(
            _Traceable(module),
            (example,),
            buffer,
            input_names=["input"],
            dynamic_axes={"input": {0: "batch"}},
            dynamo=False,
        )
    return buffer.getvalue()


def _saving(choice: Choice, images: int) -> float:
    """Seconds ``choice``'s runtime would save over torch on ``images``, at the rates it measured."""
    rates = choice.images_per_s
    if not rates.get("torch") or not rates.get(choice.runtime):
        return 0.0
    return images * (1 / rates["torch"] - 1 / rates[choice.runtime])


def _timed(run: Callable[[torch.Tensor], Outputs], batch: torch.Tensor) -> tuple[float, Outputs]:
    """Images per second of ``run`` on ``batch``, and its outputs."""
    started = time.perf_counter()
    outputs = run(batch)
    return len(batch) / max(time.perf_counter() - started, 1e-9), outputs


def _check_agreement(outputs: Outputs, exact: Outputs, allowed: list[float]) -> None:
    """Raises unless each of a runtime's ``outputs`` lies within ``allowed`` of torch's float32
    ones (``exact``, for the first rows of the batch)."""
    if len(outputs) != len(exact):
        raise ValueError(f"{len(outputs)} outputs where torch gives {len(exact)}")
    for index, (got, want, gap) in enumerate(zip(outputs, exact, allowed, strict=True)):
        got, want = got[: len(want)].float(), want.float().cpu()
        if got.shape != want.shape:
            raise ValueError(f"output {index} is {tuple(got.shape)} where torch's is {tuple(want.shape)}")
        distance = float((got - want).abs().max()) if want.numel() else 0.0
        if not distance <= gap:
            raise ValueError(f"output {index} differs from torch's by {distance:.3g} (allowed {gap:.3g})")


def _joined(first: Outputs, rest: Outputs) -> Outputs:
    return tuple(torch.cat(parts) for parts in zip(first, rest, strict=True))


def _padded(run: Callable[[torch.Tensor], Outputs], batch: torch.Tensor, size: int) -> Outputs:
    """``run``'s outputs for ``batch``, which it only ever sees ``size`` inputs at a time: a
    smaller batch is padded with copies of its last input, a larger one split."""
    if len(batch) > size:
        parts = [_padded(run, part, size) for part in batch.split(size)]
        return tuple(torch.cat(outputs) for outputs in zip(*parts, strict=True))
    count = len(batch)
    if count < size:
        batch = torch.cat([batch, batch[-1:].expand(size - count, *batch.shape[1:])])
    return tuple(output[:count] for output in run(batch))


@functools.cache
def _openvino_core() -> Any:
    return _imported("openvino").Core()


@functools.cache
def _imported(name: str) -> Any:
    """ONNX Runtime and OpenVINO write telemetry ids into the user's home folder and a temporary
    file as they are imported, and nothing of ours may be written outside the app's home folder:
    they are imported with ``HOME`` and ``TMPDIR`` pointed inside it."""
    own = runtimes_cache_dir() / "home"
    own.mkdir(parents=True, exist_ok=True)
    saved = {key: os.environ.get(key) for key in ("HOME", "TMPDIR")}
    os.environ.update(HOME=str(own), TMPDIR=str(own))
    try:
        return importlib.import_module(name)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _version(name: str) -> str:
    """A runtime's version without importing it (a new version may choose differently)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _array(batch: torch.Tensor) -> np.ndarray:
    return batch.detach().float().cpu().contiguous().numpy()


def _as_tuple(outputs: torch.Tensor | Sequence[torch.Tensor]) -> Outputs:
    return (outputs,) if isinstance(outputs, torch.Tensor) else tuple(outputs)


def _line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:200]
