"""Name-keyed registry of latency backends; each is imported only when asked for."""

from __future__ import annotations

import importlib
from typing import Any

from autoprune.errors import ConfigError
from autoprune.latency.backends._base import LatencyBackend, Session

_BACKENDS: dict[str, str] = {
    "onnxruntime": "autoprune.latency.backends.onnxruntime:OnnxRuntimeBackend",
    "torch": "autoprune.latency.backends.torch:TorchBackend",
    "tensorrt": "autoprune.latency.backends.tensorrt:TensorRTBackend",
}


def register_backend(name: str, target: str) -> None:
    """Register ``"package.module:Class"`` (a LatencyBackend subclass) under ``name``."""
    _BACKENDS[name] = target


def list_backends() -> list[str]:
    return sorted(_BACKENDS)


def get_backend(name: str, **options: Any) -> LatencyBackend:
    """Instantiate the backend ``name`` with its options (e.g. ``threads=1``)."""
    if name not in _BACKENDS:
        raise ConfigError(f"unknown latency backend '{name}': use one of {', '.join(list_backends())}")
    module_name, _, cls_name = _BACKENDS[name].partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except ImportError as exc:
        raise ConfigError(f"backend '{name}' needs a package that is not installed ({exc.name})") from exc
    try:
        backend: LatencyBackend = cls(**options)
    except TypeError as exc:  # an option this backend does not take
        raise ConfigError(f"backend '{name}' does not take these options ({exc}): drop them") from exc
    return backend


__all__ = ["LatencyBackend", "Session", "get_backend", "list_backends", "register_backend"]
