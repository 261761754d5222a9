"""The timing protocol shared by every backend: warm up for a minimum time, then timed rounds."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from autoprune.config import ProtocolConfig
from autoprune.latency.backends._base import Session


@dataclass(frozen=True)
class LatencyStats:
    """Milliseconds per inference. ``median_ms`` (the median of round medians) is *the* latency;
    ``spread`` is max/min of the round medians: how much rounds disagree."""

    median_ms: float
    mean_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    spread: float
    iterations: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def measure(session: Session, protocol: ProtocolConfig) -> LatencyStats:
    """Time ``session`` under ``protocol``. The first runs of a fresh session are several times slower
    (allocators, thread pools, lazy kernels), so warm-up is a minimum time, not a count."""
    deadline = time.perf_counter() + protocol.warmup_ms / 1e3
    while time.perf_counter() < deadline:
        session.time(1)
    rounds: list[np.ndarray] = []
    for _ in range(protocol.rounds):
        chunks = [session.time(protocol.iterations)]
        # A round lasts at least min_round_ms, so very fast networks are not timed on a few ms alone.
        while sum(c.sum() for c in chunks) < protocol.min_round_ms:
            chunks.append(session.time(protocol.iterations))
        rounds.append(np.concatenate(chunks))
    medians = np.array([np.median(r) for r in rounds])
    every = np.concatenate(rounds)
    return LatencyStats(
        median_ms=float(np.median(medians)),
        mean_ms=float(every.mean()),
        p90_ms=float(np.percentile(every, 90)),
        p99_ms=float(np.percentile(every, 99)),
        min_ms=float(every.min()),
        spread=float(medians.max() / medians.min()),
        iterations=int(every.size),
    )
