"""What this machine can train on, found without torch: the web server must never initialise CUDA."""

from __future__ import annotations

import functools
import os
import subprocess

from core import machine


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


def describe() -> str:
    """One line for the sidebar: the GPU(s) if any, else the CPU and its bf16 support."""
    gpus = gpu_names()
    if gpus:
        counts = {name: gpus.count(name) for name in gpus}
        return " + ".join(f"{n}x {name}" if n > 1 else name for name, n in counts.items())
    bf16 = ", bf16" if machine.cpu_has_bf16() else ""
    return f"CPU: {machine.cpu().name} ({os.cpu_count()} cores{bf16})"
