"""The contract every latency backend passes: subclass ``BackendContract`` once per backend setting worth
checking (``name``, ``options``); ``tests/latency/test_backends.py`` checks that every registered name has
one."""

from __future__ import annotations

import copy
import time
from typing import Any, ClassVar

import numpy as np
import torch

from autoprune.config import ProtocolConfig
from autoprune.graph import ChannelGraph, narrowest_widths
from autoprune.latency import Session, get_backend, measure, time_widths
from autoprune.models import create_model

PROTOCOL = ProtocolConfig(warmup_ms=50.0, iterations=20, min_round_ms=20.0, rounds=3)


class BackendContract:
    name: ClassVar[str]
    options: ClassVar[dict[str, Any]] = {}
    gpu_events: ClassVar[bool] = False  # timed with CUDA events: the session can tell enqueue-bound runs

    def backend(self):  # type: ignore[no-untyped-def]
        return get_backend(self.name, **self.options)

    def test_session_times_each_iteration(self) -> None:
        with self.backend().session(create_model("resnet20").eval(), (1, 3, 32, 32)) as session:
            times = session.time(7)
        assert times.shape == (7,) and np.all(times > 0) and np.all(np.isfinite(times))

    def test_settings_rebuild_the_backend_and_fingerprint_names_the_device(self) -> None:
        backend = self.backend()
        again = get_backend(self.name, **backend.settings())
        assert again.settings() == backend.settings()
        fp = backend.fingerprint()
        assert fp["cpu"] and fp["logical_cores"] >= 1 and "versions" in fp
        if fp["accelerator"] is not None:  # a GPU backend names the GPU, its driver and CUDA
            assert fp["accelerator"]["gpu"] and fp["accelerator"]["compute_capability"]
            assert "driver" in fp["accelerator"] and "cuda_runtime" in fp["accelerator"]

    def test_pruned_network_measures_faster_than_dense(self) -> None:
        dense = create_model("resnet20").eval()
        groups = ChannelGraph(copy.deepcopy(dense), torch.zeros(1, 3, 32, 32)).groups
        narrow = narrowest_widths(groups, min_ratio=0.25)
        dense_t, narrow_t = time_widths(
            dense,
            [{g.name: g.channels for g in groups}, narrow],
            backend=self.backend(),
            input_shape=(1, 3, 32, 32),
            protocol=PROTOCOL,
        )
        assert narrow_t.median_ms < dense_t.median_ms

    def test_info_says_how_the_timed_runs_ran(self) -> None:
        backend = self.backend()
        with backend.session(create_model("resnet20").eval(), (1, 3, 32, 32)) as session:
            session.time(5)
            info = session.info()
        assert isinstance(info["cuda_graph"], bool)
        if self.gpu_events:  # resnet20 captures: a graph asked for is a graph used
            assert info["cuda_graph"] is backend.settings()["cuda_graph"]
            assert isinstance(info["enqueue_bound"], bool)
        else:
            assert info == {"cuda_graph": False, "enqueue_bound": None}

    def test_times_are_milliseconds_per_iteration_taken_within_the_call(self) -> None:
        """Each iteration's time is in ms and measured inside ``time()``: together they cannot exceed
        the call's wall time (a backend returning microseconds, or the whole call per iteration, does)."""
        with self.backend().session(create_model("resnet20").eval(), (1, 3, 32, 32)) as session:
            session.time(3)  # warm
            start = time.perf_counter()
            times = session.time(10)
            wall_ms = 1e3 * (time.perf_counter() - start)
        assert float(times.sum()) <= wall_ms

    def test_the_protocol_reports_the_sessions_own_timings(self) -> None:
        seen: list[np.ndarray] = []

        class Recorded(Session):
            def __init__(self, inner: Session) -> None:
                self.inner = inner

            def time(self, iterations: int) -> np.ndarray:
                seen.append(self.inner.time(iterations))
                return seen[-1]

        with self.backend().session(create_model("resnet20").eval(), (1, 3, 32, 32)) as session:
            stats = measure(Recorded(session), PROTOCOL)
        timed = np.concatenate(seen)
        assert timed.min() <= stats.min_ms and stats.median_ms <= timed.max()
        assert PROTOCOL.rounds * PROTOCOL.iterations <= stats.iterations <= timed.size
