"""Measuring a profile's rows: the dense reference timed beside the networks, each network appended as it
is measured, and the drift correction applied on every write (:mod:`autoprune.latency.profile` says what
the columns mean)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from autoprune._io import atomic_write
from autoprune.config import ProtocolConfig
from autoprune.graph import ChannelGroup, Widths, count_macs_params, pruned_copy
from autoprune.latency.backends import LatencyBackend, Session
from autoprune.latency.protocol import LatencyStats, measure, measure_referenced
from autoprune.latency.sampler import widths_key
from autoprune.latency.shard import Shard

if TYPE_CHECKING:
    from autoprune.latency.profile import Profile

WIDTH_PREFIX = "w:"


MAX_REFERENCE_OVERHEAD = 0.25
_SETTLED = 4


class Reference:
    """The dense network's session, opened at the first network this run measures and kept for the run,
    timed beside every ``reference_every``-th network (the rows between are normalised in
    :func:`corrected`), less often while the time spent timing it exceeds ``MAX_REFERENCE_OVERHEAD`` of
    the rest (checked once it was timed ``_SETTLED`` times)."""

    def __init__(
        self, model: nn.Module, input_shape: Sequence[int], backend: LatencyBackend, protocol: ProtocolConfig
    ) -> None:
        self._open = lambda: _Stopwatch(backend.session(model, input_shape))  # a resume may measure none
        self.every = protocol.reference_every
        self._session: _Stopwatch | None = None
        self._since, self._timed, self._last_ms = self.every, 0, float("nan")
        self._started = time.perf_counter()

    def __enter__(self) -> Reference:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._session is not None:
            self._session.close()

    def measure(self, session: Session, protocol: ProtocolConfig) -> tuple[LatencyStats, float, float, bool]:
        """The network's statistics, the reference's latency, the network's latency relative to it, and
        whether the reference was timed beside it (if not: the last timing, and no ratio yet)."""
        if self.every == 0 or self._since + 1 < self.every:
            self._since += 1
            return measure(session, protocol), self._last_ms, float("nan"), False
        if self._session is None:
            self._session = self._open()
        timed = measure_referenced(session, self._session, protocol)
        self._since, self._timed, self._last_ms = 0, self._timed + 1, timed.reference_ms
        if self._timed >= _SETTLED and (self.overhead() or 0.0) > MAX_REFERENCE_OVERHEAD:
            self.every += 1  # a wide dense network among narrow ones: time it less often
        return timed.stats, timed.reference_ms, timed.ratio, True

    def overhead(self) -> float | None:
        """The time spent in the reference's timing calls, as a fraction of the rest of this run's time."""
        if self._session is None:
            return None
        spent = self._session.seconds
        rest = time.perf_counter() - self._started - spent
        return round(spent / rest, 3) if rest > 0 else None


class _Stopwatch(Session):
    """A session that adds up the wall time of its timing calls."""

    def __init__(self, inner: Session) -> None:
        self._inner, self.seconds = inner, 0.0

    def time(self, iterations: int) -> np.ndarray:
        started = time.perf_counter()
        try:
            return self._inner.time(iterations)
        finally:
            self.seconds += time.perf_counter() - started

    def close(self) -> None:
        self._inner.close()


@dataclass
class Rows:
    """A profile's rows as one run measures them: each network pruned, timed (beside the reference
    when its turn comes), appended and the file rewritten atomically; ``done`` the networks it holds."""

    model: nn.Module
    example: torch.Tensor
    groups: list[ChannelGroup]
    out: Path
    meta: dict[str, Any]
    records: list[dict[str, Any]]
    ref: Reference
    backend: LatencyBackend
    protocol: ProtocolConfig
    done: set[tuple[int, ...]] = field(default_factory=set)
    used: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.done = {widths_key(w, self.groups) for w in self.so_far().widths()} if self.records else set()
        self.used = {int(r["sample_id"]) for r in self.records}

    def so_far(self) -> Profile:
        from autoprune.latency.profile import Profile  # the module that owns the format imports this one

        return Profile(self.out, self.meta, pd.DataFrame(self.records))

    def add(self, sample_id: int, kind: str, widths: Widths) -> None:
        """Measure one network and append it atomically; a taken sample id becomes the next free one."""
        sample_id = sample_id if sample_id not in self.used else max(self.used) + 1
        sub, _ = pruned_copy(self.model, self.example, widths)
        macs, params = count_macs_params(sub, self.example)
        with self.backend.session(sub, self.meta["input_shape"]) as session:
            stats, reference_ms, ratio, beside = self.ref.measure(session, self.protocol)
            info = session.info()  # before close: a closed TensorRT session reports no graph
        self.records.append({
            "sample_id": sample_id,
            "kind": kind,
            **{WIDTH_PREFIX + name: int(w) for name, w in widths.items()},
            "macs": macs,
            "params": params,
            "latency_ms": stats.median_ms,  # corrected in write_rows
            "raw_ms": stats.median_ms,
            "reference_ms": reference_ms,
            "reference_beside": beside,
            "ratio": ratio,
            "cuda_graph": bool(info["cuda_graph"]),
            "enqueue_bound": info["enqueue_bound"],
            **{k: v for k, v in stats.to_dict().items() if k != "median_ms"},
        })  # fmt: skip
        write_rows(self.out, pd.DataFrame(self.records))
        self.done.add(widths_key(widths, self.groups))
        self.used.add(sample_id)


def measure_plan(
    rows: Rows, plan: list[tuple[str, Widths]], *, shard: Shard | None, total: int,
    on_sample: Callable[[int, int], None] | None,
) -> None:  # fmt: skip
    """The plan's networks (the shard's part of it) that ``rows`` does not hold yet."""
    mine = range(len(plan)) if shard is None else shard.part(plan)
    for step, sample_id in enumerate(mine, start=1):
        kind, widths = plan[sample_id]
        if widths_key(widths, rows.groups) not in rows.done:
            rows.add(sample_id, kind, widths)
        if on_sample is not None:
            on_sample(step, total)


def measure_active(
    rows: Rows, acquire: Callable[[Profile, int], list[Widths]], *, samples: int,
    on_sample: Callable[[int, int], None] | None,
) -> None:  # fmt: skip
    """Networks ``acquire`` proposes from the rows so far, until there are ``samples`` rows or it
    proposes nothing new."""
    while len(rows.records) < samples:
        wanted = samples - len(rows.records)
        picks: dict[tuple[int, ...], Widths] = {}
        for widths in acquire(rows.so_far(), wanted):
            key = widths_key(widths, rows.groups)
            if key not in rows.done and len(picks) < wanted:
                picks.setdefault(key, {g.name: int(widths[g.name]) for g in rows.groups})
        if not picks:  # nothing new to measure: stop rather than ask forever
            break
        for widths in picks.values():
            rows.add(max(rows.used, default=-1) + 1, "active", widths)
            if on_sample is not None:
                on_sample(len(rows.records), samples)


def corrected(frame: pd.DataFrame) -> pd.DataFrame:
    """``latency_ms`` = ``ratio`` x the profile's reference latency (the median of the reference timings
    beside rows). A row timed beside the reference has the median of its round-pair ratios; one timed
    without it gets ``raw_ms`` over the mean of the reference timings before and after it in the file
    (the one before, for the last rows). A profile measured without any reference keeps raw latency."""
    frame = frame.copy()
    raw = frame["raw_ms"].to_numpy(dtype=float)
    beside = frame["reference_beside"].to_numpy(dtype=bool)
    if not beside.any():
        frame["latency_ms"] = raw
        return frame
    ref = frame["reference_ms"].to_numpy(dtype=float).copy()
    timed = pd.Series(np.where(beside, ref, np.nan))
    ref[~beside] = np.nanmean(np.vstack([timed.ffill(), timed.bfill()])[:, ~beside], axis=0)
    ratio = np.where(beside, frame["ratio"].to_numpy(dtype=float), raw / ref)
    frame["reference_ms"], frame["ratio"] = ref, ratio
    frame["latency_ms"] = ratio * float(np.median(ref[beside]))
    return frame


def write_rows(out: Path, frame: pd.DataFrame) -> None:
    frame = corrected(frame)
    atomic_write(out, lambda tmp: frame.to_parquet(tmp, index=False))
