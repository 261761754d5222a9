"""What the GPU sessions (torch CUDA, TensorRT) share: the autograd mode they run in, CUDA graph capture
with trtexec's fallback, and timing with CUDA events plus the host's enqueue time.

- Every op a session runs (warm-up, capture, replay, timed runs) runs in :func:`session_mode`
  (``torch.inference_mode``): an inference tensor made in one of those steps cannot be updated in place
  outside it ("Inplace update to inference tensor outside InferenceMode"), so there is one mode for all.
- :func:`capture_graph` follows trtexec ``--useCudaGraph`` (``samples/common/sampleInference.cpp``): one
  warm-up enqueue (its failure is an error), then one captured enqueue; when that fails (returns False or
  raises, or the capture is invalidated) the graph is dropped with a warning and the session times plain
  launches, and says so (``cuda_graph_used`` is False).
- :class:`EnqueueTimes` flags enqueue-bound timing as trtexec does (``samples/common/sampleReporting.cpp``):
  median host time to enqueue one inference > 0.8 x its median GPU time ("Throughput may be bound by
  Enqueue Time"). The GPU then waits for the host between launches, so its event time includes launch
  gaps: the latency reflects the host, not the network.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

ENQUEUE_BOUND_RATIO = 0.8  # trtexec's enqueueBoundReportingThreshold


def session_mode() -> contextlib.AbstractContextManager[Any]:
    """The one autograd mode a GPU session runs every op in (see the module docstring)."""
    return torch.inference_mode()


def capture_graph(
    stream: torch.cuda.Stream, enqueue: Callable[[], object]
) -> tuple[torch.cuda.CUDAGraph | None, str | None]:
    """Warm up with one ``enqueue()`` on ``stream`` (it raises when the network cannot run at all), then
    capture a second one in a CUDA graph. Returns ``(graph, None)``, or ``(None, reason)`` when the
    capture failed (the enqueue raised or returned False under capture) and the caller should launch
    without a graph."""
    with session_mode(), torch.cuda.stream(stream):
        enqueue()  # outside the capture: lets TensorRT / cuDNN finish their shape-dependent setup first
        stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        reason = None
        try:
            with torch.cuda.graph(graph, stream=stream):
                if enqueue() is False:
                    reason = "the enqueue returned False under capture"
        except Exception as exc:  # an op not permitted under capture, or the capture was invalidated
            reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    if reason is not None:
        log.warning("CUDA graph capture failed (%s): timing without a CUDA graph, as trtexec does", reason)
        return None, reason
    return graph, None


class EnqueueTimes:
    """Host enqueue time and GPU time of every timed inference of one session (16 bytes each)."""

    def __init__(self) -> None:
        self._host: list[np.ndarray] = []
        self._gpu: list[np.ndarray] = []

    def add(self, host_ms: np.ndarray, gpu_ms: np.ndarray) -> None:
        self._host.append(np.asarray(host_ms, dtype=float))
        self._gpu.append(np.asarray(gpu_ms, dtype=float))

    @property
    def bound(self) -> bool | None:
        """Whether the median enqueue time exceeds 0.8 x the median GPU time; None before any timing."""
        if not self._gpu:
            return None
        host, gpu = np.median(np.concatenate(self._host)), np.median(np.concatenate(self._gpu))
        return bool(host > ENQUEUE_BOUND_RATIO * gpu)


def time_on_stream(
    stream: torch.cuda.Stream, step: Callable[[], object], iterations: int, enqueue: EnqueueTimes
) -> np.ndarray:
    """Milliseconds of GPU time of each of ``iterations`` back-to-back ``step()`` calls, each between two
    CUDA events on ``stream``, read after one synchronisation; the host time of each call goes to
    ``enqueue``."""
    events = [
        (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
        for _ in range(iterations)
    ]
    host = np.empty(iterations)
    clock = time.perf_counter_ns
    with session_mode(), torch.cuda.stream(stream):
        for i, (start, end) in enumerate(events):
            start.record(stream)
            begin = clock()
            step()
            host[i] = clock() - begin
            end.record(stream)
    stream.synchronize()
    gpu = np.array([start.elapsed_time(end) for start, end in events])
    enqueue.add(host / 1e6, gpu)
    return gpu
