"""What the timings ran on: the CPU's model and the instruction-set flags engines use."""

from __future__ import annotations

import platform
from functools import cache
from pathlib import Path

__all__ = ["cpu_flags", "cpu_model"]

# The SIMD and matrix extensions that decide which kernels an engine can use.
_RELEVANT = (
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "sve",
)


@cache
def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    path = Path("/proc/cpuinfo")
    if path.is_file():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() not in info:
                info[key.strip()] = value.strip()
    return info


def cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_flags() -> str:
    flags = set((_cpuinfo().get("flags") or _cpuinfo().get("Features") or "").split())
    return " ".join(flag for flag in _RELEVANT if flag in flags)
