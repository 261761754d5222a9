"""The timing protocol shared by every backend, modelled on trtexec: warm up for a minimum time, then
timed rounds of a minimum count and duration; noisy rounds are measured again, and a result that stays
noisy is flagged rather than silently kept.

With a ``reference`` session (a profile's dense network), each round of the network is followed by a
round of the reference, and the network's latency is also given relative to it: the median over rounds
of (network round median / reference round median). A slowdown of the whole host (another process, a
clock change) that lasts longer than a round pair moves both alike, so the ratio stays put where the raw
latency does not: :func:`measure_referenced`."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from autoprune.config import ProtocolConfig
from autoprune.latency.backends._base import Session


@dataclass(frozen=True)
class LatencyStats:
    """Milliseconds per inference. ``median_ms`` (the median of round medians) is *the* latency; the
    percentiles, mean, min and ``cv`` (coefficient of variation, as trtexec reports) are over every
    timed iteration of the kept rounds; ``spread`` is max/min of the round medians; ``remeasured``
    counts rounds measured again; ``noisy`` says the protocol's tolerances were still not met."""

    median_ms: float
    mean_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    min_ms: float
    cv: float
    spread: float
    iterations: int
    remeasured: int
    noisy: bool

    def to_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


def _round(session: Session, protocol: ProtocolConfig) -> np.ndarray:
    chunks = [session.time(protocol.iterations)]
    # A round lasts at least min_round_ms, so very fast networks are not timed on a few ms alone.
    while sum(c.sum() for c in chunks) < protocol.min_round_ms:
        chunks.append(session.time(protocol.iterations))
    return np.concatenate(chunks)


def _badness(rounds: list[np.ndarray], protocol: ProtocolConfig) -> np.ndarray:
    """Per round, how far it is beyond the tolerances (> 1: beyond)."""
    medians = np.array([np.median(r) for r in rounds])
    deviation = np.abs(medians / float(np.median(medians)) - 1.0)
    iqr = np.array([np.subtract(*np.percentile(r, [75, 25])) for r in rounds]) / medians
    return np.maximum(deviation / protocol.max_deviation, iqr / protocol.max_round_iqr)


def noisy_rounds(
    rounds: list[np.ndarray], protocol: ProtocolConfig, references: list[np.ndarray] | None = None
) -> list[int]:
    """Indices of the rounds that break the protocol's tolerances, worst first. With the reference's
    rounds beside them, a round is noisy only when it breaks them both as measured and relative to the
    reference: a slowdown of the whole host moves both alike (the ratio agrees), while on a steady host
    dividing by the reference only adds its own noise (the raw rounds agree)."""
    badness = _badness(rounds, protocol)
    if references is not None:
        relative = [r / np.median(ref) for r, ref in zip(rounds, references, strict=True)]
        badness = np.minimum(badness, _badness(relative, protocol))
    return [int(i) for i in np.argsort(-badness) if badness[i] > 1.0]


@dataclass(frozen=True)
class ReferencedStats:
    """A network timed beside a reference: its own statistics, the reference's latency over the same
    stretch of time (median of its round medians), and ``ratio``, the median over round pairs of the
    network's round median over the reference's."""

    stats: LatencyStats
    reference_ms: float
    ratio: float


def _warm_up(session: Session, milliseconds: float) -> None:
    deadline = time.perf_counter() + milliseconds / 1e3
    while time.perf_counter() < deadline:
        session.time(1)


def measure(session: Session, protocol: ProtocolConfig) -> LatencyStats:
    """Time ``session`` under ``protocol``. The first runs of a fresh session are several times slower
    (allocators, thread pools, lazy kernels, GPU clocks), so warm-up is a minimum time, not a count."""
    return _measure(session, None, protocol)[0]


def measure_referenced(session: Session, reference: Session, protocol: ProtocolConfig) -> ReferencedStats:
    """Time ``session`` with a round of the already warm ``reference`` after each of its rounds (the
    reference is warmed again for a tenth of the warm-up, its caches having been the network's)."""
    stats, ref_rounds, rounds = _measure(session, reference, protocol)
    assert ref_rounds is not None
    ref_medians = np.array([np.median(r) for r in ref_rounds])
    ratios = np.array([np.median(r) for r in rounds]) / ref_medians
    return ReferencedStats(stats, float(np.median(ref_medians)), float(np.median(ratios)))


def _measure(
    session: Session, reference: Session | None, protocol: ProtocolConfig
) -> tuple[LatencyStats, list[np.ndarray] | None, list[np.ndarray]]:
    _warm_up(session, protocol.warmup_ms)
    if reference is not None:
        _warm_up(reference, protocol.warmup_ms / 10)

    def pair() -> tuple[np.ndarray, np.ndarray | None]:
        mine = _round(session, protocol)
        return mine, None if reference is None else _round(reference, protocol)

    def bad_rounds() -> list[int]:
        rounds = [mine for mine, _ in pairs]
        references = None if reference is None else [ref for _, ref in pairs if ref is not None]
        return noisy_rounds(rounds, protocol, references)

    pairs = [pair() for _ in range(protocol.rounds)]
    remeasured = 0
    bad = bad_rounds()
    # One round at a time, worst first: a single disturbed round moves the median of the rest little.
    while bad and remeasured < protocol.max_remeasures:
        pairs[bad[0]] = pair()
        remeasured += 1
        bad = bad_rounds()
    rounds = [mine for mine, _ in pairs]
    medians = np.array([np.median(r) for r in rounds])
    every = np.concatenate(rounds)
    p90, p95, p99 = np.percentile(every, [90, 95, 99])
    stats = LatencyStats(
        median_ms=float(np.median(medians)),
        mean_ms=float(every.mean()),
        p90_ms=float(p90),
        p95_ms=float(p95),
        p99_ms=float(p99),
        min_ms=float(every.min()),
        cv=float(every.std() / every.mean()),
        spread=float(medians.max() / medians.min()),
        iterations=int(every.size),
        remeasured=remeasured,
        noisy=bool(bad),
    )
    ref_rounds = None if reference is None else [ref for _, ref in pairs if ref is not None]
    return stats, ref_rounds, rounds
