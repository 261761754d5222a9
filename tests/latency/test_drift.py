"""Drift correction: a backend whose speed changes while a profile is measured, and a profile whose
normalised latencies recover the drift-free ones."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from doubles import CountingBackend
from torch import nn

from autoprune.config import ProtocolConfig, SamplingConfig
from autoprune.latency import profile_model
from autoprune.latency.backends import Session

FAST = ProtocolConfig(warmup_ms=0.0, iterations=2, min_round_ms=0.0, rounds=3, max_remeasures=0)


class _DriftingSession(Session):
    def __init__(self, backend: DriftingBackend, ms: float) -> None:
        self._backend, self.ms = backend, ms

    def time(self, iterations: int) -> np.ndarray:
        self._backend.calls += 1  # the host's speed follows the count of timing calls, not the clock
        return np.full(iterations, self.ms * self._backend.slowdown(self._backend.calls))


class DriftingBackend(CountingBackend):
    """Latency proportional to parameters (the drift-free truth), times a host slowdown."""

    def __init__(self, slowdown: Callable[[int], float]) -> None:
        super().__init__()
        self.slowdown, self.calls = slowdown, 0

    def session(self, model: nn.Module, input_shape: Sequence[int]) -> Session:
        return _DriftingSession(self, sum(p.numel() for p in model.parameters()) / 1e5)


def _tiny() -> nn.Module:
    """Two conv-BN-ReLU blocks: fast to trace and prune."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )  # fmt: skip


def _profile(tmp_path: Any, backend: CountingBackend, every: int) -> Any:
    return profile_model(
        _tiny(),
        model_spec="tiny",
        num_classes=10,
        input_shape=(1, 3, 16, 16),
        backend=backend,
        sampling=SamplingConfig(samples=24),
        protocol=ProtocolConfig(**{**FAST.to_dict(), "reference_every": every}),
        out=tmp_path / f"p{every}.parquet",
    )


def _relative(latency: np.ndarray) -> np.ndarray:
    return latency / latency[0]  # row 0 is the dense network


@pytest.mark.parametrize(
    ("every", "slowdown"),
    [
        (1, lambda call: 1.0 if call < 70 else 1.7),  # another process starts halfway through
        (1, lambda call: 1.0 + 0.4 * math.sin(call / 40.0)),  # the clock wanders up and down
        (2, lambda call: 1.0 + 0.01 * call),  # a steady slowdown, from 1x to about 2.5x
    ],
)
def test_normalised_latencies_recover_the_drift_free_ones(tmp_path, every, slowdown) -> None:  # type: ignore[no-untyped-def]
    truth = _relative(_profile(tmp_path / "steady", CountingBackend(), every=every).latency_ms(raw=True))
    prof = _profile(tmp_path, DriftingBackend(slowdown), every=every)
    raw, fixed = _relative(prof.latency_ms(raw=True)), _relative(prof.latency_ms())
    assert np.abs(raw / truth - 1).max() > 0.3  # the drift is large ...
    assert np.abs(fixed / truth - 1).max() < 0.03  # ... and corrected
    if every == 2:
        assert list(prof.rows["reference_beside"][:4]) == [True, False, True, False]


def test_without_a_reference_the_latency_is_the_raw_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    backend = DriftingBackend(lambda call: 1.0 + 0.01 * call)
    prof = _profile(tmp_path, backend, every=0)
    assert not prof.rows["reference_beside"].any() and prof.reference_ms() is None
    assert np.array_equal(prof.latency_ms(), prof.latency_ms(raw=True))


def test_the_reference_is_timed_less_often_while_its_overhead_is_too_high(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from autoprune.latency._measuring import Reference

    monkeypatch.setattr(Reference, "overhead", lambda self: 0.5)  # twice the allowance
    prof = _profile(tmp_path, CountingBackend(), every=1)
    beside = list(prof.rows["reference_beside"])
    assert beside[:4] == [True] * 4  # every row, until it was timed _SETTLED times
    assert beside[4:8] == [False, True, False, False]  # then every 2nd, then every 3rd ...
    assert prof.meta["runs"][-1]["reference_every"] > 3
