"""The machine a measurement ran on: every benchmark reports it with its figures."""

from __future__ import annotations

import os
import platform
import resource
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def _cpuinfo(field: str) -> str | None:
    """The value of `field` for the first CPU in /proc/cpuinfo; None where it cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what `platform` knows."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


# The vector extensions that set a CPU's matmul rate: fp32 FMA width, and native bf16 (AVX-512 BF16, AMX).
VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_vector_flags() -> list[str]:
    """Which of `VECTOR_FLAGS` /proc/cpuinfo lists (empty where it cannot be read)."""
    flags = set((_cpuinfo("flags") or "").split())
    return [f for f in VECTOR_FLAGS if f in flags]


def machine_info() -> dict:
    """CPU, core count, GPU, and the torch / lerobot / diffusers / transformers versions of this machine."""
    info = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpu_vector_flags": cpu_vector_flags(),
    }
    try:
        import torch

        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()  # the kernels torch picked
    except ImportError:
        info["gpu"] = None
    for package in ("torch", "lerobot", "diffusers", "transformers"):
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            info[package] = None
    return info


def _status_mib(field: str) -> float | None:
    """`field` of /proc/self/status (a size in KiB) in MiB; None where there is no such file (not Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mib() -> float:
    """This process's peak RSS so far. Linux: VmHWM of /proc/self/status, the high-water mark of this
    process's own memory; `ru_maxrss` would not do, since a child spawned by subprocess (vfork + exec) starts
    with its parent's high-water mark in it."""
    peak = _status_mib("VmHWM")
    if peak is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return peak


def anon_rss_mib() -> float | None:
    """This process's anonymous resident memory now (RssAnon of /proc/self/status): what it allocated,
    against pages mapped from files, which the kernel can drop and processes share. None off Linux."""
    return _status_mib("RssAnon")
