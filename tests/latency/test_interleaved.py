"""Networks timed beside a reference: judged on their ratio to it, repeated while that is unsettled."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from doubles import BusyBackend, CountingBackend
from torch import nn

from autoprune.config import ProtocolConfig
from autoprune.latency import Timing, time_interleaved
from autoprune.latency.backends import Session
from autoprune.latency.interleaved import MAX_REPEATS, central_spread

FAST = ProtocolConfig(warmup_ms=0.0, iterations=2, min_round_ms=0.0, rounds=3, max_remeasures=0)


def _net(width: int) -> nn.Module:  # on (1, 3, 8, 8) inputs; the doubles time it by its parameters
    return nn.Sequential(nn.Conv2d(3, width, 3), nn.Flatten(), nn.Linear(36 * width, 10))


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_on_a_busy_host_the_ratio_holds_where_absolute_timings_do_not() -> None:
    dense, small, mid = _net(32), _net(8), _net(16)
    truth = [_params(m) / _params(dense) for m in (small, mid)]
    timings = time_interleaved(
        [small, mid], backend=BusyBackend(), input_shape=(1, 3, 8, 8), protocol=FAST, repeats=3,
        reference=dense, tolerance=0.03, max_seconds=60.0,
    )  # fmt: skip
    for t, true in zip(timings, truth, strict=True):
        assert t.ratio == pytest.approx(true, rel=0.021)  # the ±30 % load cancels in the ratio
        assert t.ratio_spread is not None and t.ratio_spread - 1 <= 0.03 < t.spread - 1
        assert t.reference_ms is not None and t.repeats >= 3
        judged = t.judged(frame_ms=2.0)
        assert judged.median_ms == pytest.approx(2.0 * t.ratio) and judged.raw_ms == t.median_ms
        assert judged.spread == t.ratio_spread
    with pytest.raises(ValueError, match="beside a reference"):
        Timing(1.0, 1.0).judged(2.0)


class _Jittery(Session):
    """Each call ±20 % on its own: the ratio never settles."""

    def __init__(self, ms: float, rng: np.random.Generator) -> None:
        self.ms, self.rng = ms, rng

    def time(self, iterations: int) -> np.ndarray:
        return np.full(iterations, self.ms * self.rng.uniform(0.8, 1.2))


class _JitteryBackend(CountingBackend):
    def __init__(self) -> None:
        super().__init__()
        self.rng = np.random.default_rng(1)

    def session(self, model: nn.Module, input_shape: Sequence[int]) -> Session:
        return _Jittery(sum(p.numel() for p in model.parameters()) / 1e5, self.rng)


@pytest.mark.parametrize(("max_seconds", "expected"), [(0.0, 3), (1e9, MAX_REPEATS)])
def test_unsettled_ratios_are_repeated_up_to_the_cap(max_seconds: float, expected: int) -> None:
    dense, small = _net(32), _net(8)
    (t,) = time_interleaved(
        [small], backend=_JitteryBackend(), input_shape=(1, 3, 8, 8), protocol=FAST, repeats=3,
        reference=dense, tolerance=0.01, max_seconds=max_seconds,
    )  # fmt: skip
    assert t.repeats == expected


def test_the_spread_is_of_the_repeats_nearest_the_median() -> None:
    assert central_spread([1.0, 1.01, 1.02], 3) == pytest.approx(1.02)
    # A repeat disturbed by another process is outvoted once more repeats are in.
    assert central_spread([1.0, 1.5, 1.01, 1.02, 0.99], 3) == pytest.approx(1.02 / 1.0)
