"""Several networks timed in one run, interleaved (A B C A B C ...): the only fair comparison on a
shared machine, where another process can slow one stretch of time down."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from autoprune.config import ProtocolConfig
from autoprune.graph import Widths, pruned_copy
from autoprune.latency.backends import LatencyBackend
from autoprune.latency.protocol import measure


@dataclass(frozen=True)
class Timing:
    """One network's latency over interleaved repeats: the median of the repeats' medians, and their
    spread (max/min), which says how far an independent re-timing may land."""

    median_ms: float
    spread: float


def time_interleaved(
    models: Sequence[nn.Module],
    *,
    backend: LatencyBackend,
    input_shape: Sequence[int],
    protocol: ProtocolConfig,
    repeats: int = 3,
) -> list[Timing]:
    """Each model timed over ``repeats`` interleaved applications of the protocol."""
    sessions = [backend.session(m, input_shape) for m in models]
    try:
        medians = np.array([[measure(s, protocol).median_ms for s in sessions] for _ in range(repeats)])
    finally:
        for s in sessions:
            s.close()
    return [Timing(float(np.median(col)), float(col.max() / col.min())) for col in medians.T]


def time_widths(
    dense: nn.Module,
    widths: Sequence[Widths],
    *,
    backend: LatencyBackend,
    input_shape: Sequence[int],
    protocol: ProtocolConfig,
    repeats: int = 3,
) -> list[Timing]:
    """``dense`` pruned to each widths (which channels survive does not matter for latency), timed
    interleaved."""
    example = torch.zeros(1, *input_shape[1:])
    models = [pruned_copy(dense, example, w)[0] for w in widths]
    return time_interleaved(
        models, backend=backend, input_shape=input_shape, protocol=protocol, repeats=repeats
    )
