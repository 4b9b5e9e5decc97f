"""What this machine can train on, found without torch: the web server must never initialise CUDA."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def gpu_names() -> tuple[str, ...]:
    """Names of the NVIDIA GPUs ``nvidia-smi`` sees; empty without a driver."""
    try:
        listing = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(line.strip() for line in listing.splitlines() if line.strip())


@functools.cache
def _cpuinfo() -> dict[str, str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    first = text.split("\n\n", 1)[0]
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first.splitlines())}


def cpu_name() -> str:
    return _cpuinfo().get("model name", "CPU")


def cpu_flags() -> tuple[str, ...]:
    """What the CPU can do, as ``/proc/cpuinfo`` names it (``avx2``, ``amx_bf16`` ...)."""
    return tuple(_cpuinfo().get("flags", "").split())


def cpu_has_bf16() -> bool:
    """AMX or AVX-512 BF16: bf16 autocast is then ~3x faster than fp32 rather than emulated."""
    return any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)


def describe() -> str:
    """One line for the sidebar: the GPU(s) if any, else the CPU and its bf16 support."""
    gpus = gpu_names()
    if gpus:
        counts = {name: gpus.count(name) for name in gpus}
        return " + ".join(f"{n}x {name}" if n > 1 else name for name, n in counts.items())
    bf16 = ", bf16" if cpu_has_bf16() else ""
    return f"CPU: {cpu_name()} ({os.cpu_count()} cores{bf16})"
