"""What a measurement was taken on: host CPU, OS and library versions."""

from __future__ import annotations

import os
import platform
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
