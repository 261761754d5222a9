"""Whether the tests marked ``gpu`` and ``tensorrt`` can run here (tests/conftest.py applies it).

Skipped when the hardware or the package is absent; failed, loudly, when it is there but broken: a
tensorrt wheel whose import fails (no libnvinfer, TensorRT < 10) or a CUDA build of torch that sees no
GPU beside an NVIDIA driver must not let ``pytest -m "tensorrt or gpu"`` pass green with nothing run.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any


class BrokenSetup(Exception):
    """The GPU or TensorRT is here but cannot be used: the tests that need it fail with this message."""


def gpu_skip_reason(
    *, cuda_available: bool, cuda_build: str | None, driver: str | None, torch_version: str
) -> str | None:
    """Why a ``gpu`` test skips here, or None when it runs; raises BrokenSetup when it must fail."""
    if cuda_available:
        return None
    if cuda_build is None:
        return f"torch {torch_version} is a CPU build (no CUDA)"
    if driver is None:
        return "no NVIDIA GPU on this machine"
    raise BrokenSetup(
        f"NVIDIA driver {driver} is here and torch {torch_version} is a CUDA {cuda_build} build, but torch "
        "sees no CUDA device: install a torch build that supports this driver"
    )


def tensorrt_skip_reason(*, gpu_reason: str | None, installed: bool, load: Callable[[], Any]) -> str | None:
    """Why a ``tensorrt`` test skips here, or None when it runs; raises BrokenSetup when TensorRT is
    installed (``importlib.util.find_spec``) but ``load()`` cannot import it."""
    if gpu_reason is not None:
        return gpu_reason
    if not installed:
        return "TensorRT is not installed (pip install 'autoprune[tensorrt]')"
    try:
        load()
    except Exception as exc:
        raise BrokenSetup(f"the tensorrt package is installed but unusable: {exc}") from exc
    return None


def gpu_here() -> str | None:
    import torch

    from autoprune.latency.fingerprint import nvidia_driver_version

    available = torch.cuda.is_available()
    return gpu_skip_reason(
        cuda_available=available,
        cuda_build=torch.version.cuda,
        driver=None if available else nvidia_driver_version(),
        torch_version=torch.__version__,
    )


def tensorrt_here() -> str | None:
    from autoprune.latency.trt_engine import require_tensorrt

    return tensorrt_skip_reason(
        gpu_reason=gpu_here(),
        installed=importlib.util.find_spec("tensorrt") is not None,
        load=require_tensorrt,
    )
