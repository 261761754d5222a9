"""Test doubles shared by several test files (tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from torch import nn

from autoprune.latency.backends import BACKENDS, LatencyBackend, Session


def use_backend(mp: pytest.MonkeyPatch, name: str, target: str) -> None:
    """Register the backend ``target`` ("doubles:Class") as ``name`` until ``mp`` is undone. The class is
    put in the registry's cache too, so that undoing ``mp`` restores (or removes) the cached class as well:
    a class left cached would outlive the test and serve ``name`` to every later test of the process."""
    module, _, attr = target.partition(":")
    mp.setitem(BACKENDS._targets, name, target)
    mp.setitem(BACKENDS._classes, name, getattr(importlib.import_module(module), attr))


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


class _ScaledSession(Session):
    """``ms`` times the host's slowdown at each call (the backend's ``host``)."""

    def __init__(self, backend: CountingBackend, ms: float) -> None:
        self._backend, self.ms = backend, ms

    def time(self, iterations: int) -> np.ndarray:
        return np.full(iterations, self.ms * self._backend.host())  # type: ignore[attr-defined]


class SixPercentSlowerBackend(CountingBackend):
    """The profiled device (same fingerprint), every network uniformly 6 % slower than it was profiled."""

    def host(self) -> float:
        return 1.06

    def session(self, model: nn.Module, input_shape: Sequence[int]) -> Session:
        return _ScaledSession(self, sum(p.numel() for p in model.parameters()) / 1e5)


class BusyBackend(CountingBackend):
    """The profiled device on a busy host: another process's load changes every few timing calls, so
    absolute timings vary by up to ±30 % from one round to the next, while a network and the dense one
    timed beside it share the host's state and their ratio stays within ±1 % (seeded, repeatable)."""

    def __init__(self, cpu: str = "test-cpu") -> None:
        super().__init__(cpu)
        self._rng, self.calls, self._load = np.random.default_rng(0), 0, 1.0

    def host(self) -> float:
        if self.calls % 7 == 0:  # the other process changes what it does
            self._load = float(self._rng.uniform(0.7, 1.3))
        self.calls += 1
        return self._load * float(self._rng.uniform(0.99, 1.01))

    def session(self, model: nn.Module, input_shape: Sequence[int]) -> Session:
        return _ScaledSession(self, sum(p.numel() for p in model.parameters()) / 1e5)


class FlatBackend(CountingBackend):
    """The profiled device, except that pruning gains nothing on it: every network measures as the dense
    one does, so no network of the search space fits a budget below the dense latency."""

    dense_ms = 0.0

    def host(self) -> float:
        return 1.0

    def session(self, model: nn.Module, input_shape: Sequence[int]) -> Session:
        FlatBackend.dense_ms = max(FlatBackend.dense_ms, sum(p.numel() for p in model.parameters()) / 1e5)
        return _ScaledSession(self, FlatBackend.dense_ms)


class OverheadBackend(CountingBackend):
    """The profiled device plus a fixed cost per inference the profile did not see (``overhead_ms``, about
    60 % of the tiny resnet20's own): a pruned network measures a larger share of the dense latency than
    predicted, so a network predicted well within a budget measures over it, and only narrower ones fit."""

    overhead_ms = 1.6

    def session(self, model: nn.Module, input_shape: Sequence[int]) -> Session:
        self.loaded += 1
        session = _ParamSession(sum(p.numel() for p in model.parameters()))
        session.ms += self.overhead_ms
        return session
