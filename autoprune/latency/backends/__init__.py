"""Name-keyed registry of latency backends; each is imported only when asked for."""

from __future__ import annotations

from typing import Any

from autoprune._registry import Registry
from autoprune.latency.backends._base import LatencyBackend, Session

BACKENDS: Registry[LatencyBackend] = Registry(
    "latency backend",
    {
        "onnxruntime": "autoprune.latency.backends.onnxruntime:OnnxRuntimeBackend",
        "torch": "autoprune.latency.backends.torch:TorchBackend",
        "tensorrt": "autoprune.latency.backends.tensorrt:TensorRTBackend",
    },
)


def register_backend(name: str, target: str) -> None:
    """Register ``"package.module:Class"`` (a LatencyBackend subclass) under ``name``."""
    BACKENDS.register_target(name, target)


def list_backends() -> list[str]:
    return BACKENDS.names()


def get_backend(name: str, **options: Any) -> LatencyBackend:
    """Instantiate the backend ``name`` with its options (e.g. ``threads=1``)."""
    return BACKENDS.create(name, **options)


__all__ = ["BACKENDS", "LatencyBackend", "Session", "get_backend", "list_backends", "register_backend"]
