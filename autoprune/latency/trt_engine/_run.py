"""Running and timing an engine: ``EngineRunner`` (torch CUDA I/O tensors, CUDA events, optional CUDA
graph and host<->device copies)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from autoprune.errors import ConfigError, ExportError
from autoprune.latency._cuda import EnqueueTimes, capture_graph, session_mode, time_on_stream
from autoprune.latency.backends._base import Session
from autoprune.latency.trt_engine._env import TrtLogger, last_error, require_cuda, require_tensorrt


def torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    """The torch dtype of a TensorRT ``DataType`` (names differ across versions: looked up lazily)."""
    table = {
        getattr(trt, name): value
        for name, value in [
            ("float32", torch.float32),
            ("float16", torch.float16),
            ("bfloat16", torch.bfloat16),
            ("int8", torch.int8),
            ("uint8", torch.uint8),
            ("int32", torch.int32),
            ("int64", torch.int64),
            ("bool", torch.bool),
        ]
        if hasattr(trt, name)
    }
    if dtype not in table:
        raise ExportError(f"engine tensor type {dtype} has no torch equivalent: rebuild with fp32 I/O")
    return table[dtype]


class EngineRunner:
    """A deserialised engine with its execution context and torch CUDA I/O tensors for one batch size.

    ``run(x)`` infers on a given input (parity checks); ``time(n)`` times ``n`` back-to-back inferences on
    a fixed random input, each between two CUDA events recorded on the runner's stream (trtexec's "GPU
    Compute Time"). ``transfers`` adds the pinned host->device input copy and device->host output copy to
    every timed iteration (trtexec's default before 11; 11's default and ``--noDataTransfers`` leave them
    out). ``cuda_graph`` captures one ``execute_async_v3`` (after one warm-up enqueue, as trtexec
    ``--useCudaGraph`` and Torch-TensorRT do) with ``torch.cuda.graph`` and replays it in ``time``; when
    the capture fails the runner launches without a graph, as trtexec does (``cuda_graph_used`` False,
    ``graph_error`` says why). ``enqueue_bound`` flags timing bound by the host's enqueue time.
    Call ``close()`` to free the GPU memory.
    """

    def __init__(
        self,
        engine: bytes,
        batch: int | None = None,
        *,
        device: int = 0,
        transfers: bool = False,
        cuda_graph: bool = False,
    ) -> None:
        trt = require_tensorrt()
        require_cuda(device)
        self._trt, self.transfers = trt, transfers
        self.device = torch.device("cuda", device)
        with torch.cuda.device(device):
            self._runtime = trt.Runtime(TrtLogger.get())
            self._engine = self._runtime.deserialize_cuda_engine(engine)
            if self._engine is None:
                raise ExportError(
                    f"TensorRT {trt.__version__} cannot load this engine ({last_error(TrtLogger.get())}): "
                    "rebuild it on this machine with autoprune export --format tensorrt"
                )
            self._context = self._engine.create_execution_context()
            names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
            is_input = [self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names]
            self.input_names = [n for n, i in zip(names, is_input, strict=True) if i]
            self.output_names = [n for n, i in zip(names, is_input, strict=True) if not i]
            self.batch_range = self._batch_range(self.input_names[0])
            self.batch = self.batch_range[1] if batch is None else batch
            if not self.batch_range[0] <= self.batch <= self.batch_range[2]:
                raise ConfigError(
                    f"batch {self.batch} is outside the engine's range {list(self.batch_range)}: "
                    "rebuild the engine with that batch in its range"
                )
            self.buffers = self._allocate(trt)
            self._host: dict[str, Tensor] = {}
            if transfers:  # pinned host copies, so the timed copies are true async DMA transfers
                self._host = {
                    n: torch.empty_like(t, device="cpu").pin_memory() for n, t in self.buffers.items()
                }
                for name in self.input_names:
                    self._host[name].copy_(self.buffers[name])
            self._stream = torch.cuda.Stream(self.device)
            self._stream.wait_stream(torch.cuda.current_stream(self.device))  # the buffers were filled there
            self._graph: torch.cuda.CUDAGraph | None = None
            self.graph_error: str | None = None
            self._enqueue_times = EnqueueTimes()
            if cuda_graph:  # warm-up enqueue, then capture, on the runner's stream
                self._graph, self.graph_error = capture_graph(self._stream, self._enqueue)
            self._stream.synchronize()

    def _allocate(self, trt: Any) -> dict[str, Tensor]:
        """The engine's I/O tensors on the device for ``self.batch`` (inputs random, seed 0), bound to the
        context."""
        buffers: dict[str, Tensor] = {}
        gen = torch.Generator().manual_seed(0)
        for name in self.input_names:
            shape = (self.batch, *tuple(self._engine.get_tensor_shape(name))[1:])
            if not self._context.set_input_shape(name, shape):
                raise ExportError(f"the engine rejects input shape {list(shape)} for '{name}'")
            dtype = torch_dtype(trt, self._engine.get_tensor_dtype(name))
            buffers[name] = torch.randn(shape, generator=gen).to(self.device, dtype)
        for name in self.output_names:
            shape = tuple(self._context.get_tensor_shape(name))
            dtype = torch_dtype(trt, self._engine.get_tensor_dtype(name))
            buffers[name] = torch.empty(shape, dtype=dtype, device=self.device)
        for name, tensor in buffers.items():
            self._context.set_tensor_address(name, tensor.data_ptr())
        return buffers

    def _batch_range(self, name: str) -> tuple[int, int, int]:
        lo, opt, hi = self._engine.get_tensor_profile_shape(name, 0)
        return int(lo[0]), int(opt[0]), int(hi[0])

    @property
    def shapes(self) -> dict[str, list[int]]:
        """Every I/O tensor's shape at this runner's batch."""
        return {name: list(t.shape) for name, t in self.buffers.items()}

    def io_spec(self) -> dict[str, list[dict[str, Any]]]:
        """Names, dtypes and shapes (batch axis -1 when dynamic) of the engine's inputs and outputs."""

        def spec(name: str) -> dict[str, Any]:
            return {
                "name": name,
                "dtype": str(self.buffers[name].dtype).removeprefix("torch."),
                "shape": [int(d) for d in self._engine.get_tensor_shape(name)],
            }

        return {
            "inputs": [spec(n) for n in self.input_names],
            "outputs": [spec(n) for n in self.output_names],
        }

    @property
    def cuda_graph_used(self) -> bool:
        """Whether ``time`` replays a captured graph (asked for and captured: see ``graph_error``)."""
        return self._graph is not None

    @property
    def enqueue_bound(self) -> bool | None:
        """Whether the timed runs so far were enqueue-bound (see ``autoprune.latency._cuda``)."""
        return self._enqueue_times.bound

    def _execute(self) -> None:
        if not self._context.execute_async_v3(self._stream.cuda_stream):
            raise ExportError(
                f"TensorRT failed to enqueue the engine ({last_error(TrtLogger.get())}): "
                "rebuild it on this machine"
            )

    def _enqueue(self) -> None:
        if self.transfers:
            for name in self.input_names:
                self.buffers[name].copy_(self._host[name], non_blocking=True)
        self._execute()
        if self.transfers:
            for name in self.output_names:
                self._host[name].copy_(self.buffers[name], non_blocking=True)

    def run(self, x: Tensor) -> dict[str, Tensor]:
        """Infer on ``x`` (the single input, this runner's batch); the outputs, cloned, on the GPU."""
        name = self.input_names[0]
        if tuple(x.shape) != tuple(self.buffers[name].shape):
            raise ConfigError(f"input shape {list(x.shape)} != the runner's {list(self.buffers[name].shape)}")
        self._stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._stream):
            with session_mode():
                self.buffers[name].copy_(x)
                self._execute()
            # cloned outside inference mode: the caller gets ordinary tensors
            outputs = {n: self.buffers[n].clone() for n in self.output_names}
        self._stream.synchronize()
        return outputs

    def time(self, iterations: int) -> np.ndarray:
        """Milliseconds of each of ``iterations`` back-to-back inferences (CUDA events, one sync)."""
        step = self._enqueue if self._graph is None else self._graph.replay
        return time_on_stream(self._stream, step, iterations, self._enqueue_times)

    def close(self) -> None:
        """Free the context's and the I/O tensors' GPU memory (context before engine before runtime)."""
        if getattr(self, "_context", None) is None:
            return
        self._stream.synchronize()
        self._graph = None
        self._context = None
        self._engine = None
        self._runtime = None
        self.buffers, self._host = {}, {}
        torch.cuda.empty_cache()

    def __enter__(self) -> EngineRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EngineSession(Session):
    """An :class:`EngineRunner` as a latency :class:`Session`: what the tensorrt backend times and what
    ``export --format tensorrt`` measures the exported engine with."""

    def __init__(self, runner: EngineRunner) -> None:
        self._runner = runner

    def time(self, iterations: int) -> np.ndarray:
        return self._runner.time(iterations)

    def info(self) -> dict[str, Any]:
        return {"cuda_graph": self._runner.cuda_graph_used, "enqueue_bound": self._runner.enqueue_bound}

    def close(self) -> None:
        self._runner.close()
