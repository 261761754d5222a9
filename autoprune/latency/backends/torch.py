"""PyTorch eager inference: on the CPU (wall clock), or on a CUDA GPU timed with CUDA events.

On CUDA each iteration is bracketed by a pair of events recorded on the session's stream and read after
one synchronisation, so the host's Python overhead is excluded as far as the GPU runs ahead of it, as
trtexec's "GPU Compute Time". ``cuda_graph`` captures one inference in a CUDA graph and replays it
(like trtexec ``--useCudaGraph``), which removes kernel-launch overhead: closest to a deployed engine.
``transfers`` adds the host-to-device copy of the input and the device-to-host copy of the output to
every timed iteration; by default only compute is timed, as in TensorRT 11's trtexec.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from autoprune.errors import ConfigError
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
        self._model = model.to(device=device, dtype=dtype)
        self._device, self._transfers = device, transfers
        # cuDNN autotunes each convolution's algorithm on first use, as TensorRT picks tactics at build.
        self._benchmark_before = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = True
        host = torch.randn(tuple(input_shape), generator=torch.Generator().manual_seed(0)).to(dtype)
        self._host_in = host.pin_memory()
        self._input = host.to(device)
        self._stream = torch.cuda.Stream(device)
        self._graph: torch.cuda.CUDAGraph | None = None
        with torch.inference_mode(), torch.cuda.stream(self._stream):
            self._output = self._model(self._input)  # also the warm-up capture needs
            self._host_out = torch.empty(self._output.shape, dtype=self._output.dtype).pin_memory()
            if cuda_graph:
                self._stream.synchronize()
                self._graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self._graph, stream=self._stream):
                    self._output = self._model(self._input)
        self._stream.synchronize()

    def _infer(self) -> None:
        if self._transfers:
            self._input.copy_(self._host_in, non_blocking=True)
        if self._graph is not None:
            self._graph.replay()
        else:
            self._output = self._model(self._input)
        if self._transfers:
            self._host_out.copy_(self._output, non_blocking=True)

    def time(self, iterations: int) -> np.ndarray:
        events = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            for _ in range(iterations)
        ]
        with torch.inference_mode(), torch.cuda.stream(self._stream):
            for start, end in events:
                start.record(self._stream)
                self._infer()
                end.record(self._stream)
        self._stream.synchronize()
        return np.array([start.elapsed_time(end) for start, end in events])

    def close(self) -> None:
        self._stream.synchronize()
        self._graph = None
        del self._model, self._input, self._output
        torch.backends.cudnn.benchmark = self._benchmark_before
        torch.cuda.empty_cache()


class TorchBackend(LatencyBackend):
    """Eager PyTorch. ``device="cpu"``: ``threads`` intra-op threads (set process-wide while timing),
    fp32. ``device="cuda"`` (or ``"cuda:N"``): fp32 or fp16 (half weights and inputs), optional CUDA
    graph replay and host<->device copies."""

    name = "torch"

    def __init__(
        self,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        threads: int = 1,
        cuda_graph: bool = False,
        transfers: bool = False,
    ) -> None:
        if precision not in DTYPES:
            raise ConfigError(f"the torch backend measures {' or '.join(DTYPES)}, not {precision}")
        if threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {threads}")
        self.device, self.precision, self.threads = device, precision, threads
        self.cuda_graph, self.transfers = cuda_graph, transfers
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
