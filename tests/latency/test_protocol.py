"""The trtexec-like protocol on scripted sessions: each ``time(n)`` call is one round of known values."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest

from autoprune.config import ProtocolConfig
from autoprune.errors import ConfigError
from autoprune.latency import Session, measure, noisy_rounds

# No warm-up and no minimum duration: every time() call is exactly one round.
SCRIPTED = ProtocolConfig(warmup_ms=0.0, iterations=20, min_round_ms=0.0, rounds=3, max_remeasures=3)


class ScriptedSession(Session):
    def __init__(self, rounds: Iterable[np.ndarray]) -> None:
        self._rounds = iter(rounds)
        self.calls = 0

    def time(self, iterations: int) -> np.ndarray:
        self.calls += 1
        values = next(self._rounds)
        assert values.size == iterations
        return values


def flat(ms: float, n: int = 20) -> np.ndarray:
    return np.full(n, ms)


def test_quiet_rounds_are_measured_once() -> None:
    session = ScriptedSession([flat(1.0), flat(1.01), flat(0.99)])
    stats = measure(session, SCRIPTED)
    assert session.calls == 3 and stats.remeasured == 0 and not stats.noisy
    assert stats.median_ms == pytest.approx(1.0) and stats.spread == pytest.approx(1.01 / 0.99)
    assert stats.iterations == 60 and stats.min_ms == pytest.approx(0.99)


def test_a_disturbed_round_is_measured_again_and_replaced() -> None:
    session = ScriptedSession([flat(1.0), flat(1.6), flat(1.0), flat(1.02)])
    stats = measure(session, SCRIPTED)
    assert session.calls == 4 and stats.remeasured == 1 and not stats.noisy
    assert stats.median_ms == pytest.approx(1.0) and stats.mean_ms < 1.01  # the 1.6 round is gone


def test_a_round_with_a_wide_spread_is_measured_again() -> None:
    wide = np.linspace(0.5, 1.5, 20)  # median 1.0 like the others, but an IQR of half the median
    session = ScriptedSession([flat(1.0), wide, flat(1.0), flat(1.0)])
    stats = measure(session, SCRIPTED)
    assert stats.remeasured == 1 and not stats.noisy and stats.p99_ms == pytest.approx(1.0)


def test_still_noisy_after_the_allowed_remeasures_is_flagged() -> None:
    session = ScriptedSession(flat(v) for v in [1.0, 2.0, 3.0] * 10)
    stats = measure(session, SCRIPTED)
    assert session.calls == 3 + SCRIPTED.max_remeasures and stats.remeasured == SCRIPTED.max_remeasures
    assert stats.noisy and stats.spread >= 1.5


def test_percentiles_and_cv_over_every_iteration() -> None:
    values = np.arange(1, 21, dtype=float)
    session = ScriptedSession([values])
    stats = measure(
        session, ProtocolConfig(warmup_ms=0, iterations=20, min_round_ms=0, rounds=1, max_round_iqr=10.0)
    )
    assert (stats.p90_ms, stats.p95_ms, stats.p99_ms) == tuple(np.percentile(values, [90, 95, 99]))
    assert stats.cv == pytest.approx(values.std() / values.mean())
    assert stats.min_ms <= stats.median_ms <= stats.p90_ms <= stats.p95_ms <= stats.p99_ms


def test_protocol_validation() -> None:
    with pytest.raises(ConfigError, match="max_deviation"):
        ProtocolConfig(max_deviation=0)
    with pytest.raises(ConfigError, match="max_remeasures"):
        ProtocolConfig(max_remeasures=-1)


def test_with_a_reference_a_round_is_noisy_only_when_raw_and_relative_both_disagree() -> None:
    protocol = ProtocolConfig()
    steady, step = [np.full(30, 1.0)] * 2 + [np.full(30, 1.0)], [np.full(30, 1.0)] * 2 + [np.full(30, 1.5)]
    assert noisy_rounds(step, protocol) == [2]
    assert noisy_rounds(step, protocol, references=step) == []  # the whole host slowed: the ratio agrees
    assert noisy_rounds(steady, protocol, references=step) == []  # the reference's noise is not the network's
    assert noisy_rounds(step, protocol, references=steady) == [2]  # the network alone slowed
