"""PyTorch eager inference: on the CPU (wall clock), or on a CUDA GPU timed with CUDA events.

On CUDA each iteration is bracketed by a pair of events recorded on the session's stream and read after
one synchronisation, so the host's Python overhead is excluded as far as the GPU runs ahead of it, as
trtexec's "GPU Compute Time". ``cuda_graph`` (on by default on CUDA) captures one inference in a CUDA
graph and replays it (like trtexec ``--useCudaGraph``), which removes kernel-launch overhead: closest to a
deployed engine; a network that cannot be captured is launched eagerly instead, and ``Session.info()``
says which ran and whether the timing was enqueue-bound (:mod:`autoprune.latency._cuda`).
``transfers`` adds the host-to-device copy of the input and the device-to-host copy of the output to
every timed iteration; by default only compute is timed, as in TensorRT 11's trtexec.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from autoprune.errors import ConfigError
from autoprune.latency._cuda import EnqueueTimes, capture_graph, session_mode, time_on_stream
from autoprune.latency.backends._base import LatencyBackend, Session
from autoprune.latency.fingerprint import gpu_fingerprint, host_fingerprint, versions

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


class _CpuSession(Session):
    def __init__(self, model: nn.Module, input_shape: Sequence[int], threads: int) -> None:
        self._model = model
        self._input = torch.randn(tuple(input_shape), generator=torch.Generator().manual_seed(0))
        self._threads_before = torch.get_num_threads()
        torch.set_num_threads(threads)  # process-wide: restored on close()

    def time(self, iterations: int) -> np.ndarray:
        out = np.empty(iterations)
        with torch.inference_mode():
            for i in range(iterations):
                start = time.perf_counter_ns()
                self._model(self._input)
                out[i] = time.perf_counter_ns() - start
        return out / 1e6

    def close(self) -> None:
        torch.set_num_threads(self._threads_before)


class _CudnnBenchmark:
    """cuDNN autotuning, a process-wide flag, on while any CUDA session is open. Sessions may close in
    any order (nested or overlapping): the value from before the first one is restored when the last
    one closes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._before = False

    def acquire(self) -> None:
        with self._lock:
            if self._users == 0:
                self._before = torch.backends.cudnn.benchmark
                torch.backends.cudnn.benchmark = True
            self._users += 1

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                torch.backends.cudnn.benchmark = self._before


_CUDNN_BENCHMARK = _CudnnBenchmark()


class _CudaSession(Session):
    def __init__(
        self,
        model: nn.Module,
        input_shape: Sequence[int],
        *,
        device: torch.device,
        dtype: torch.dtype,
        cuda_graph: bool,
        transfers: bool,
    ) -> None:
        self._transfers, self._enqueue, self._closed = transfers, EnqueueTimes(), False
        # cuDNN autotunes each convolution's algorithm on first use, as TensorRT picks tactics at build.
        _CUDNN_BENCHMARK.acquire()
        try:
            self._setup(model, input_shape, device=device, dtype=dtype, cuda_graph=cuda_graph)
        except BaseException:
            self.close()
            raise

    def _setup(
        self,
        model: nn.Module,
        input_shape: Sequence[int],
        *,
        device: torch.device,
        dtype: torch.dtype,
        cuda_graph: bool,
    ) -> None:
        self._model = model.to(device=device, dtype=dtype)
        host = torch.randn(tuple(input_shape), generator=torch.Generator().manual_seed(0)).to(dtype)
        self._host_in = host.pin_memory()
        self._input = host.to(device)
        self._stream = torch.cuda.Stream(device)
        self._stream.wait_stream(torch.cuda.current_stream(device))  # the copies above ran there
        self._graph: torch.cuda.CUDAGraph | None = None
        if cuda_graph:  # the warm-up forward sets self._output; under capture, the graph's output
            self._graph, _ = capture_graph(self._stream, self._forward)
        else:
            with session_mode(), torch.cuda.stream(self._stream):
                self._forward()
        self._host_out = torch.empty(self._output.shape, dtype=self._output.dtype).pin_memory()
        self._stream.synchronize()

    def _forward(self) -> None:
        self._output = self._model(self._input)

    def _infer(self) -> None:
        if self._transfers:
            self._input.copy_(self._host_in, non_blocking=True)
        if self._graph is not None:
            self._graph.replay()
        else:
            self._forward()
        if self._transfers:
            self._host_out.copy_(self._output, non_blocking=True)

    def time(self, iterations: int) -> np.ndarray:
        return time_on_stream(self._stream, self._infer, iterations, self._enqueue)

    def info(self) -> dict[str, Any]:
        return {"cuda_graph": self._graph is not None, "enqueue_bound": self._enqueue.bound}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if hasattr(self, "_stream"):
            self._stream.synchronize()
        self._graph = None
        for name in ("_model", "_input", "_output"):
            self.__dict__.pop(name, None)
        _CUDNN_BENCHMARK.release()
        torch.cuda.empty_cache()


class TorchBackend(LatencyBackend):
    """Eager PyTorch. ``device="cpu"``: ``threads`` intra-op threads (set process-wide while timing),
    fp32. ``device="cuda"`` (or ``"cuda:N"``): fp32 or fp16 (half weights and inputs), CUDA graph replay
    (``cuda_graph``, default on; where capture fails the session launches eagerly and its ``info()``
    says so) and optional host<->device copies. ``settings()`` records ``cuda_graph`` resolved."""

    name = "torch"

    def __init__(
        self,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        threads: int = 1,
        cuda_graph: bool | None = None,
        transfers: bool = False,
    ) -> None:
        if precision not in DTYPES:
            raise ConfigError(f"the torch backend measures {' or '.join(DTYPES)}, not {precision}")
        if threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {threads}")
        self.device, self.precision, self.threads = device, precision, threads
        # Default: a CUDA graph on CUDA (as trtexec times), not applicable on the CPU.
        self.cuda_graph, self.transfers = (device != "cpu") if cuda_graph is None else cuda_graph, transfers
        if device == "cpu":
            if precision != "fp32" or cuda_graph or transfers:
                raise ConfigError(
                    "on --device cpu the torch backend measures fp32 without CUDA graphs or transfers: "
                    "drop --precision/--cuda-graph/--transfers, or pass --device cuda"
                )
        elif device.split(":")[0] == "cuda":
            if not torch.cuda.is_available():
                raise ConfigError(
                    f"--device {device} but torch sees no CUDA GPU here: measure on the target GPU, "
                    "or pass --device cpu"
                )
            self._torch_device = torch.device(device)
        else:
            raise ConfigError(f"unknown --device '{device}': use cpu, cuda or cuda:N")

    def settings(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "precision": self.precision,
            "threads": self.threads,
            "cuda_graph": self.cuda_graph,
            "transfers": self.transfers,
        }

    def fingerprint(self) -> dict[str, Any]:
        if self.device == "cpu":
            return {**host_fingerprint(), "accelerator": None, "versions": versions("torch")}
        index = self._torch_device.index or 0
        return {**host_fingerprint(), "accelerator": gpu_fingerprint(index), "versions": versions("torch")}

    def session(self, model: nn.Module, input_shape: Sequence[int]) -> Session:
        model = copy.deepcopy(model).eval()
        if self.device == "cpu":
            return _CpuSession(model, input_shape, self.threads)
        return _CudaSession(
            model,
            input_shape,
            device=self._torch_device,
            dtype=DTYPES[self.precision],
            cuda_graph=self.cuda_graph,
            transfers=self.transfers,
        )
