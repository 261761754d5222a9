"""What a measurement was taken on: host CPU, OS and library versions."""

from __future__ import annotations

import os
import platform
import subprocess
from functools import cache
from importlib import metadata
from typing import Any


@cache
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_fingerprint() -> dict[str, Any]:
    """The host part of every device fingerprint (a GPU backend adds its accelerator)."""
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "machine": platform.machine(),
        "system": platform.system(),
    }


def nvidia_driver_version() -> str | None:
    """The kernel driver's version (e.g. "550.54.15"), from /proc on Linux, else nvidia-smi, else None."""
    try:
        with open("/proc/driver/nvidia/version") as f:
            for token in f.readline().split():
                if token[:1].isdigit() and "." in token:
                    return token
    except OSError:
        pass
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.split()
        return out[0] if out else None
    except (OSError, subprocess.SubprocessError):
        return None


def gpu_fingerprint(index: int = 0) -> dict[str, Any]:
    """The ``accelerator`` entry for a CUDA device: what makes a GPU latency comparable to another."""
    import torch

    props = torch.cuda.get_device_properties(index)
    return {
        "gpu": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "memory_gib": round(props.total_memory / 2**30, 1),
        "multiprocessors": props.multi_processor_count,
        "driver": nvidia_driver_version(),
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }


def versions(*packages: str) -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def device_identity(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The part of a fingerprint that must match for latencies to be comparable (not versions)."""
    return {k: v for k, v in fingerprint.items() if k != "versions"}
