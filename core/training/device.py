"""Where a run executes: the device, its numeric precision, and its place among torchrun ranks.

Auto-selection prefers CUDA, then Apple's MPS, then the CPU. Reduced precision is used where the
hardware has units for it: bf16 on CUDA GPUs that support it (fp16 with a gradient scaler
otherwise), and bf16 on CPUs with AVX-512 BF16 or AMX, where it is fast rather than emulated.
Tensors are channels_last on CUDA and on the CPU, where oneDNN's convolutions prefer it in every
precision.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from core import machine
from core.errors import TransferLabError
from core.models.runtime import PRECISION_DTYPES, Accelerator


class DeviceError(TransferLabError, ValueError):
    """A device or precision the plan asks for that this machine cannot give."""


def select_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: CUDA (this rank's GPU under torchrun), then MPS, then CPU; else the one named."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r} asked for, but torch sees no CUDA GPU; use auto or cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        elif device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s)"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {name!r} asked for, but MPS is not available; use auto or cpu")
    return device


def cpu_has_bf16() -> bool:
    """AVX-512 BF16 or AMX: the CPU units that make bf16 autocast fast rather than emulated.

    ``core.machine`` decides (``TRANSFER_LAB_CPU_BF16`` can say ``off`` or ``on``); under
    ``auto`` torch must find the units too, as the kernels it runs are what count.
    """
    if machine.bf16_setting() != "auto":
        return machine.cpu_has_bf16()
    torch_finds_them = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return machine.cpu_has_bf16() and torch_finds_them


def choose_precision(device: torch.device, precision: str = "auto") -> str:
    """The precision a plan's ``auto`` means on this device, or the one asked for, checked."""
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if device.type == "cpu" and cpu_has_bf16():
            return "bf16"
        return "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise DeviceError(f"precision 'fp16' needs a CUDA GPU, not {device.type}; use auto, bf16 or fp32")
    if precision not in PRECISION_DTYPES:
        raise DeviceError(f"precision {precision!r} is not one of: auto, {', '.join(PRECISION_DTYPES)}")
    return precision


def accelerator(device: str = "auto", precision: str = "auto", local_rank: int = 0) -> Accelerator:
    """Pick device and precision and set the process-wide switches that go with them."""
    dev = select_device(device, local_rank)
    chosen = choose_precision(dev, precision)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        # On, because every training batch of a run has one shape (``epoch_batches`` fills the
        # last one): cuDNN then times its kernels for each convolution once per shape and pass
        # (forward; backward, and again when a stage starts training the body's weights) and
        # every later step reuses the fastest. It costs seconds at each new shape, which is why
        # training never varies its batch, and forward-only passes pad their last batch.
        torch.backends.cudnn.benchmark = True
    # channels_last pays off wherever convolutions run through cuDNN or oneDNN, in float32 too:
    # EfficientNet-Lite0 on 2 CPU cores trained 1.4x and inferred 1.9x faster in fp32 with it,
    # with AVX-512 as with AVX2 only (bench/README.md).
    channels_last = dev.type in ("cuda", "cpu")
    return Accelerator(dev, chosen, channels_last, fixed_shapes=dev.type == "cuda")


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA raises ``torch.OutOfMemoryError``; MPS a RuntimeError that says so."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def release_cached_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


@dataclass(frozen=True)
class Ranks:
    """This process's place in a torchrun job; one process alone is rank 0 of 1."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only the main rank writes events and artefacts."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def ranks_from_env() -> Ranks:
    """What torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); defaults outside it."""
    return Ranks(
        rank=int(os.environ.get("RANK", "0")),
        world=int(os.environ.get("WORLD_SIZE", "1")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )
