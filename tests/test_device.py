"""Device and precision choice: what auto means here, and refusals of what this machine lacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core import machine
from core.training import device
from core.training.device import DeviceError, accelerator, choose_precision, is_out_of_memory, select_device

ROOT = Path(__file__).resolve().parents[1]


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert select_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert select_device("auto", local_rank=3) == torch.device("cuda", 1)  # torchrun's local rank


def test_an_explicit_device_overrides_auto() -> None:
    assert select_device("cpu") == torch.device("cpu")


def test_asking_for_a_missing_gpu_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match=r"device 'cuda:0' asked for, but torch sees no CUDA GPU"):
        select_device("cuda:0")


def test_cpus_with_bf16_units_train_in_bf16_with_channels_last(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(machine.BF16_ENV, "on")
    accel = accelerator("cpu")
    assert (accel.precision, accel.channels_last) == ("bf16", True)
    assert accel.autocast().fast_dtype == torch.bfloat16


def test_cpus_without_bf16_units_stay_in_fp32_with_channels_last(no_bf16_cpu: None) -> None:
    accel = accelerator("cpu")
    assert (accel.precision, accel.channels_last) == ("fp32", True)  # faster in fp32 too (bench/README)


def test_auto_finds_the_units_in_the_cpu_s_flags_where_torch_finds_them_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(machine.BF16_ENV, raising=False)
    flags = {"amx_bf16", "avx512_bf16"} & machine.cpu().flags
    by_torch = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert device.cpu_has_bf16() == (bool(flags) and by_torch)
    assert choose_precision(torch.device("cpu")) == ("bf16" if flags and by_torch else "fp32")


def test_a_bad_bf16_setting_is_refused_naming_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(machine.BF16_ENV, "yes")
    with pytest.raises(machine.MachineError) as refused:
        choose_precision(torch.device("cpu"))
    assert str(refused.value) == "TRANSFER_LAB_CPU_BF16='yes': expected one of auto, off, on (auto detects)"


def test_the_bf16_setting_reaches_the_processes_a_run_starts(no_bf16_cpu: None) -> None:
    """Workers are processes of their own: what they pick must follow the setting too."""
    code = "import torch; from core.training.device import choose_precision; print(choose_precision(torch.device('cpu')))"
    picked = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert picked.stdout.strip() == "fp32"


def test_the_plan_can_turn_reduced_precision_off() -> None:
    accel = accelerator("cpu", "fp32")
    assert (accel.precision, accel.needs_grad_scaler, accel.fixed_shapes) == ("fp32", False, False)


def test_cuda_without_bf16_falls_back_to_fp16_with_a_grad_scaler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert choose_precision(torch.device("cuda", 0)) == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert choose_precision(torch.device("cuda", 0)) == "bf16"


def test_fp16_is_refused_off_cuda() -> None:
    with pytest.raises(DeviceError, match=r"precision 'fp16' needs a CUDA GPU, not cpu"):
        choose_precision(torch.device("cpu"), "fp16")


def test_out_of_memory_is_recognised_from_cuda_and_mps() -> None:
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 9 GB)"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


def test_ranks_come_from_torchrun_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    ranks = device.ranks_from_env()
    assert (ranks.rank, ranks.world, ranks.local_rank, ranks.is_main, ranks.distributed) == (
        3,
        4,
        1,
        False,
        True,
    )
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert device.ranks_from_env().is_main and not device.ranks_from_env().distributed
