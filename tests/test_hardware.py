"""The device line in the sidebar and the GPU count of the queue, found without torch or CUDA."""

from __future__ import annotations

import subprocess
import sys

import pytest

from core import machine
from core.jobs import hardware, local


@pytest.fixture
def fake_smi(monkeypatch: pytest.MonkeyPatch):
    """Pretend ``nvidia-smi`` lists the given GPUs (None: no driver)."""

    def install(names: list[str] | None) -> None:
        def run(command, **kwargs):
            if names is None:
                raise FileNotFoundError(command[0])
            return subprocess.CompletedProcess(command, 0, stdout="".join(f"{n}\n" for n in names))

        hardware.gpu_names.cache_clear()
        monkeypatch.setattr(hardware.subprocess, "run", run)
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    yield install
    hardware.gpu_names.cache_clear()


def test_gpus_are_named_and_counted(fake_smi) -> None:
    fake_smi(["NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"])
    assert hardware.describe() == "2x NVIDIA H100 80GB HBM3"
    assert local.gpu_ids() == ["0", "1"]
    assert local.max_concurrent() == 2


def test_without_a_driver_the_cpu_is_described(fake_smi) -> None:
    fake_smi(None)
    assert hardware.describe().startswith(f"CPU: {machine.cpu().name} (")
    assert local.gpu_ids() == [] and local.max_concurrent() == 1


def test_the_cpu_s_bf16_units_are_named_as_the_setting_says(
    fake_smi, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_smi(None)
    monkeypatch.setenv(machine.BF16_ENV, "on")
    assert hardware.describe().endswith(" cores, bf16)")
    monkeypatch.setenv(machine.BF16_ENV, "off")
    assert hardware.describe().endswith(" cores)")
    monkeypatch.setenv(machine.BF16_ENV, "auto")
    assert hardware.describe().endswith(", bf16)") == machine.cpu().has_bf16_units


def test_finding_the_device_loads_no_torch() -> None:
    code = "import sys, core.jobs.hardware as h; h.describe(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
