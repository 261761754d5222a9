"""Test doubles shared by several test files (tests/ is on pytest's pythonpath)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

from autoprune.latency.backends import LatencyBackend, Session


class _ParamSession(Session):
    def __init__(self, params: int) -> None:
        self.ms = params / 1e5

    def time(self, iterations: int) -> np.ndarray:
        return np.full(iterations, self.ms)


class CountingBackend(LatencyBackend):
    """A test double: latency proportional to parameter count; counts the networks it loads."""

    name = "counting"

    def __init__(self, cpu: str = "test-cpu") -> None:
        self.cpu, self.loaded = cpu, 0

    def settings(self) -> dict[str, Any]:
        return {}

    def fingerprint(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "logical_cores": 2, "accelerator": None, "versions": {}}

    def session(self, model: nn.Module, input_shape: Sequence[int]) -> Session:
        self.loaded += 1
        return _ParamSession(sum(p.numel() for p in model.parameters()))


class SlowedBackend(CountingBackend):
    """The same device as :class:`CountingBackend` (same fingerprint), running twice as slow: a host
    busier at search time than when it was profiled."""

    def session(self, model: nn.Module, input_shape: Sequence[int]) -> Session:
        self.loaded += 1
        return _ParamSession(2 * sum(p.numel() for p in model.parameters()))
