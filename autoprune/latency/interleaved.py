"""Several networks timed in one run, interleaved (A B C A B C ...): the only fair comparison on a
shared machine, where another process can slow one stretch of time down.

Beside a reference (the dense network), each network is timed round for round with it, as a profile's
rows are (:func:`~autoprune.latency.protocol.measure_referenced`), and also given as its *ratio* to the
reference: a slowdown of the whole host moves both alike, so the ratio holds where absolute times do not.
Repeats are added, up to a time cap, while a network's figure is still spread wider than the tolerance,
as trtexec repeats until a measurement is stable, and the spread reached is reported with the figure."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from autoprune.config import ProtocolConfig
from autoprune.graph import Widths, pruned_copy
from autoprune.latency.backends import LatencyBackend
from autoprune.latency.protocol import measure, measure_referenced

MAX_REPEATS = 12  # the most repeats one comparison takes, whatever its time cap


@dataclass(frozen=True)
class Timing:
    """One network's latency over interleaved repeats: the median of the repeats' medians and their
    spread (max/min of the ``repeats`` values nearest that median: how far an independent re-timing may
    land). Timed beside a reference: ``ratio`` (median over repeats of this network's latency over the
    reference's in the same stretch of time), its spread, and ``reference_ms`` (the reference's median
    over the same repeats). ``judged`` converts it to a latency in a given frame (``raw_ms`` keeps the
    measured median)."""

    median_ms: float
    spread: float
    ratio: float | None = None
    ratio_spread: float | None = None
    reference_ms: float | None = None
    repeats: int = 1
    raw_ms: float | None = None

    def judged(self, frame_ms: float) -> Timing:
        """This network's latency as ``ratio`` x ``frame_ms`` (the reference's latency the caller's budget
        refers to), its spread the ratio's: what a busy host does to both alike cancels."""
        if self.ratio is None or self.ratio_spread is None:
            raise ValueError("judged() needs a timing taken beside a reference")
        return replace(self, median_ms=self.ratio * frame_ms, spread=self.ratio_spread, raw_ms=self.median_ms)


def central_spread(values: Sequence[float], keep: int) -> float:
    """max/min of the ``keep`` values nearest their median: a repeat disturbed by another process is
    outvoted once more repeats have been taken, as the protocol re-measures a disturbed round."""
    v = np.asarray(values, dtype=float)
    kept = v[np.argsort(np.abs(v - np.median(v)))[: max(1, keep)]]
    return float(kept.max() / kept.min())


def time_interleaved(
    models: Sequence[nn.Module],
    *,
    backend: LatencyBackend,
    input_shape: Sequence[int],
    protocol: ProtocolConfig,
    repeats: int = 3,
    reference: nn.Module | None = None,
    tolerance: float | None = None,
    max_seconds: float = 0.0,
) -> list[Timing]:
    """Each model timed over ``repeats`` interleaved applications of the protocol, beside ``reference``
    when given. With a ``tolerance``, repeats continue while any model's spread (of its ratio, beside a
    reference) exceeds it and the comparison has run under ``max_seconds`` (and under
    :data:`MAX_REPEATS` repeats)."""
    sessions = [backend.session(m, input_shape) for m in models]
    ref = None if reference is None else backend.session(reference, input_shape)
    start = time.perf_counter()
    own: list[list[float]] = [[] for _ in sessions]
    ratios: list[list[float]] = [[] for _ in sessions]
    refs: list[list[float]] = [[] for _ in sessions]

    def unsettled() -> bool:
        judged = own if ref is None else ratios
        return any(central_spread(v, repeats) - 1.0 > tolerance for v in judged)  # type: ignore[operator]

    try:
        if ref is not None:
            measure(ref, protocol)  # warm, so the first network's first reference round is not cold
        while True:
            for i, s in enumerate(sessions):
                if ref is None:
                    own[i].append(measure(s, protocol).median_ms)
                else:
                    r = measure_referenced(s, ref, protocol)
                    own[i].append(r.stats.median_ms)
                    ratios[i].append(r.ratio)
                    refs[i].append(r.reference_ms)
            done = len(own[0]) if own else repeats
            if done < repeats:
                continue
            if tolerance is None or done >= MAX_REPEATS or time.perf_counter() - start >= max_seconds:
                break
            if not unsettled():
                break
    finally:
        for s in [*sessions, *([] if ref is None else [ref])]:
            s.close()
    out = []
    for i in range(len(sessions)):
        t = Timing(float(np.median(own[i])), central_spread(own[i], repeats), repeats=len(own[i]))
        if ref is not None:
            t = replace(
                t,
                ratio=float(np.median(ratios[i])),
                ratio_spread=central_spread(ratios[i], repeats),
                reference_ms=float(np.median(refs[i])),
            )
        out.append(t)
    return out


def time_widths(
    dense: nn.Module,
    widths: Sequence[Widths],
    *,
    backend: LatencyBackend,
    input_shape: Sequence[int],
    protocol: ProtocolConfig,
    repeats: int = 3,
    beside_dense: bool = False,
    tolerance: float | None = None,
    max_seconds: float = 0.0,
) -> list[Timing]:
    """``dense`` pruned to each widths (which channels survive does not matter for latency), timed
    interleaved; with ``beside_dense``, each round for round beside ``dense`` itself (its ratio)."""
    example = torch.zeros(1, *input_shape[1:])
    models = [pruned_copy(dense, example, w)[0] for w in widths]
    return time_interleaved(
        models, backend=backend, input_shape=input_shape, protocol=protocol, repeats=repeats,
        reference=copy.deepcopy(dense) if beside_dense else None, tolerance=tolerance,
        max_seconds=max_seconds,
    )  # fmt: skip
