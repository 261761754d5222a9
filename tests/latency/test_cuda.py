"""The GPU sessions' shared helpers (autoprune.latency._cuda), run here on fakes of torch.cuda's stream,
graph and event: the order of warm-up and capture, the autograd mode, the fallback when capture fails,
and the enqueue-bound flag. The same paths on a real GPU: tests marked gpu / tensorrt."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from autoprune.latency import _cuda
from autoprune.latency._cuda import ENQUEUE_BOUND_RATIO, EnqueueTimes, capture_graph, time_on_stream


class _Stream:
    def __init__(self) -> None:
        self.log: list[str] = []

    def synchronize(self) -> None:
        self.log.append("sync")


class _Graph:
    """A fake torch.cuda.CUDAGraph plus its ``torch.cuda.graph`` context: records whether the capture
    ran in inference mode; ``invalidate`` makes ending the capture fail, as CUDA does when an op that is
    not permitted ran under capture."""

    invalidate = False

    def __init__(self, stream: _Stream) -> None:
        self.stream = stream

    @contextlib.contextmanager
    def capture(self, graph: Any, stream: _Stream) -> Iterator[None]:
        stream.log.append(f"capture-begin inference={torch.is_inference_mode_enabled()}")
        yield
        if self.invalidate:
            raise RuntimeError("CUDA error: operation failed due to a previous error during capture")
        stream.log.append("capture-end")


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch) -> _Stream:
    fake = _Stream()
    graph = _Graph(fake)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: "graph")
    monkeypatch.setattr(torch.cuda, "graph", graph.capture)
    monkeypatch.setattr(_Graph, "invalidate", False)
    return fake


def _enqueue(stream: _Stream, fail_under_capture: str | None = None) -> Any:
    def enqueue() -> bool:
        capturing = bool(stream.log) and stream.log[-1].startswith("capture-begin")
        stream.log.append(f"enqueue inference={torch.is_inference_mode_enabled()}")
        if capturing and fail_under_capture == "raise":
            raise RuntimeError("operation not permitted when stream is capturing")
        return not (capturing and fail_under_capture == "false")

    return enqueue


def test_capture_warms_up_then_captures_in_inference_mode(stream: _Stream) -> None:
    graph, reason = capture_graph(stream, _enqueue(stream))  # type: ignore[arg-type]
    assert (graph, reason) == ("graph", None)
    assert stream.log == [
        "enqueue inference=True",  # the warm-up, outside the capture
        "sync",
        "capture-begin inference=True",
        "enqueue inference=True",
        "capture-end",
    ]


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        ("false", "the enqueue returned False under capture"),  # execute_async_v3 returned False
        ("raise", "RuntimeError: operation not permitted"),  # an op that cannot be captured
        ("invalidated", "RuntimeError: CUDA error"),  # the capture could not end
    ],
)
def test_a_failed_capture_falls_back_to_plain_launches_and_says_why(
    stream: _Stream, failure: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    if failure == "invalidated":
        _Graph.invalidate = True
    with caplog.at_level(logging.WARNING, logger=_cuda.__name__):
        graph, why = capture_graph(stream, _enqueue(stream, failure))  # type: ignore[arg-type]
    assert graph is None and why is not None and why.startswith(reason) and "\n" not in why
    assert "timing without a CUDA graph" in caplog.text


def test_a_failed_warm_up_is_an_error_not_a_fallback(stream: _Stream) -> None:
    def broken() -> None:
        raise RuntimeError("TensorRT failed to enqueue the engine")

    with pytest.raises(RuntimeError, match="failed to enqueue"):
        capture_graph(stream, broken)  # type: ignore[arg-type]


def test_enqueue_bound_follows_trtexecs_threshold() -> None:
    times = EnqueueTimes()
    assert times.bound is None  # nothing timed yet
    times.add(np.full(5, 0.79), np.full(5, 1.0))
    assert times.bound is False
    times.add(np.full(11, ENQUEUE_BOUND_RATIO + 0.02), np.full(11, 1.0))  # the medians now cross 0.8
    assert times.bound is True


def test_time_on_stream_records_gpu_and_host_time_of_each_step(
    stream: _Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GPU time from the events, host time around the step only, both per iteration; no real clock."""

    class Event:
        def __init__(self, enable_timing: bool) -> None:
            self.at = 0.0

        def record(self, s: _Stream) -> None:
            s.log.append("record")
            self.at = len(s.log)

        def elapsed_time(self, end: Event) -> float:
            return 0.5  # ms

    ticks = iter(range(0, 10**9, 1_000_000))  # each clock read: +1 ms
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(_cuda.time, "perf_counter_ns", lambda: next(ticks))
    modes: list[bool] = []
    enqueue = EnqueueTimes()
    gpu = time_on_stream(stream, lambda: modes.append(torch.is_inference_mode_enabled()), 4, enqueue)  # type: ignore[arg-type]
    assert gpu.tolist() == [0.5] * 4 and modes == [True] * 4
    assert stream.log == ["record", "record"] * 4 + ["sync"]
    assert enqueue.bound is True  # 1 ms to enqueue a 0.5 ms inference
