"""Several networks timed in one run, interleaved (A B C A B C ...): the only fair comparison on a
shared machine, where another process can slow one stretch of time down."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from autoprune.config import ProtocolConfig
from autoprune.graph import Widths, pruned_copy
from autoprune.latency.backends import LatencyBackend
from autoprune.latency.protocol import measure


def measure_interleaved(
    models: Sequence[nn.Module],
    *,
    backend: LatencyBackend,
    input_shape: Sequence[int],
    protocol: ProtocolConfig,
    repeats: int = 3,
) -> list[float]:
    """Median latency (ms) of each model over ``repeats`` interleaved applications of the protocol."""
    sessions = [backend.session(m, input_shape) for m in models]
    try:
        medians = np.array([[measure(s, protocol).median_ms for s in sessions] for _ in range(repeats)])
    finally:
        for s in sessions:
            s.close()
    return [float(v) for v in np.median(medians, axis=0)]


def measure_widths(
    dense: nn.Module,
    widths: Sequence[Widths],
    *,
    backend: LatencyBackend,
    input_shape: Sequence[int],
    protocol: ProtocolConfig,
    repeats: int = 3,
) -> list[float]:
    """Latency of ``dense`` pruned to each widths (the dense model first when widths are dense)."""
    example = torch.zeros(1, *input_shape[1:])
    models = [pruned_copy(dense, example, w)[0] for w in widths]
    return measure_interleaved(
        models, backend=backend, input_shape=input_shape, protocol=protocol, repeats=repeats
    )
