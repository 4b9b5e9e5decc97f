"""This machine's CPU as the app needs to know it, read from ``/proc/cpuinfo`` without torch.

The sidebar names the CPU and whether it has bf16 units; training picks bf16 autocast where it
has them (AVX-512 BF16 or AMX), since there bf16 is about three times faster than fp32, and
fp32 where it would be emulated and slower. ``TRANSFER_LAB_CPU_BF16`` overrides what is
detected: ``auto`` (the default) detects, ``off`` behaves as a CPU without bf16 units, ``on``
as one with them. Being an environment variable, it reaches the workers too, so that the whole
app, or the whole test suite, can run as it would on a CPU without the units (an AVX2-only
AMD EPYC, say) on one that has them.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from core.errors import TransferLabError

BF16_ENV = "TRANSFER_LAB_CPU_BF16"
BF16_CHOICES = ("auto", "off", "on")
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


class MachineError(TransferLabError, ValueError):
    """A setting about this machine that names no choice there is."""


@dataclass(frozen=True)
class Cpu:
    """The first processor's entry in ``/proc/cpuinfo``: every core of a machine is alike."""

    name: str
    flags: frozenset[str]

    @property
    def has_bf16_units(self) -> bool:
        """AMX or AVX-512 BF16, as the CPU reports them, whatever the override says."""
        return any(flag in self.flags for flag in BF16_CPU_FLAGS)


@functools.cache
def cpu() -> Cpu:
    """This machine's CPU; a bare ``CPU`` without flags where ``/proc/cpuinfo`` is missing (macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return Cpu("CPU", frozenset())
    first = text.split("\n\n", 1)[0]
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first.splitlines())}
    return Cpu(fields.get("model name", "CPU"), frozenset(fields.get("flags", "").split()))


def bf16_setting() -> str:
    """``TRANSFER_LAB_CPU_BF16``, checked: ``auto`` where unset. Read on every call, so that a
    test can change it."""
    value = os.environ.get(BF16_ENV, "").strip().lower() or "auto"
    if value not in BF16_CHOICES:
        raise MachineError(f"{BF16_ENV}={value!r}: expected one of {', '.join(BF16_CHOICES)} (auto detects)")
    return value


def cpu_has_bf16() -> bool:
    """Whether to treat this CPU as one with bf16 units: detected under ``auto``, else as set."""
    setting = bf16_setting()
    return cpu().has_bf16_units if setting == "auto" else setting == "on"
