"""The machine a benchmark ran on, in one line: every speed figure names its CPU.

``Intel(R) Xeon(R) Processor, 2 cores, AMX + AVX-512 BF16`` or ``AMD EPYC 7B13, 2 cores, AVX2
only``; with the environment variables that narrow what torch and oneDNN use (how an AVX2-only
CPU is emulated on a newer one) named when they are set.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import machine

NARROWING = ("TRANSFER_LAB_CPU_BF16", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")


def describe() -> str:
    cpu = machine.cpu()
    flags = cpu.flags
    units = [name for flag, name in (("amx_bf16", "AMX"), ("avx512_bf16", "AVX-512 BF16")) if flag in flags]
    isa = " + ".join(units) if units else ("AVX-512, no bf16 units" if "avx512f" in flags else "AVX2 only")
    line = f"{cpu.name}, {len(os.sched_getaffinity(0))} cores, {isa}"
    narrowed = [f"{name}={os.environ[name]}" for name in NARROWING if os.environ.get(name)]
    return line + (f" (run with {' '.join(narrowed)})" if narrowed else "")


if __name__ == "__main__":
    print(describe())
