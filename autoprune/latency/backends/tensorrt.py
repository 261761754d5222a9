"""TensorRT on an NVIDIA GPU: each network is built into an engine (fixed batch: min = opt = max) with the
settings of :mod:`autoprune.latency.trt_engine`, the same code ``autoprune export --format tensorrt``
uses, and timed per iteration with CUDA events on the session's stream (trtexec's "GPU Compute Time").

Precision (see ``trt_engine``): fp32 and fp16 build the same strongly typed engine on TensorRT 10 and 11
(fp16: fp16 weights and compute, fp32 I/O); int8 uses TensorRT 10's calibrator on random inputs, which
gives int8 *latency*, not a calibrated model, and is refused on TensorRT 11.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from autoprune.errors import ConfigError
from autoprune.latency.backends._base import LatencyBackend, Session
from autoprune.latency.fingerprint import gpu_fingerprint, host_fingerprint, versions
from autoprune.latency.trt_engine import (
    EngineConfig,
    EngineRunner,
    EngineSession,
    build_engine,
    check_precision_supported,
    cuda_index,
    require_cuda,
    require_tensorrt,
)


class TensorRTBackend(LatencyBackend):
    """TensorRT engines on CUDA device ``device`` (``0``, ``"cuda"`` or ``"cuda:N"``).

    ``precision`` fp32 | fp16 | int8 (int8: TensorRT 10 only); ``workspace_mib`` the builder's workspace;
    ``builder_optimization_level`` 0-5 (3, TensorRT's default; lower builds faster, runs slower);
    ``tf32`` lets fp32 convolutions use TF32 (TensorRT's default); ``transfers`` times the host<->device
    copies too (default: compute only, as TensorRT 11's trtexec); ``cuda_graph`` replays one captured
    ``execute_async_v3`` (trtexec ``--useCudaGraph``; default on; an engine that cannot be captured is
    launched without a graph, and the session's ``info()`` says so); ``timing_cache`` a file that makes
    rebuilding the same layers faster (it does not change the tactics chosen).

    The fingerprint carries the TensorRT version at the top level, not only under "versions": an engine
    and its latency belong to one TensorRT release, so profiles from two releases must not be mixed
    (``device_identity`` drops only "versions").
    """

    name = "tensorrt"

    def __init__(
        self,
        *,
        precision: str = "fp32",
        device: int | str = 0,
        workspace_mib: int = 1024,
        builder_optimization_level: int = 3,
        tf32: bool = True,
        transfers: bool = False,
        cuda_graph: bool | None = None,
        timing_cache: str | None = None,
    ) -> None:
        self.device = cuda_index(device)
        self.precision, self.workspace_mib = precision, workspace_mib
        self.builder_optimization_level, self.tf32 = builder_optimization_level, tf32
        self.transfers, self.timing_cache = transfers, timing_cache
        self.cuda_graph = True if cuda_graph is None else cuda_graph
        self._engine_config(1)  # validates the build settings before anything is imported
        self._trt = require_tensorrt()
        require_cuda(self.device)
        check_precision_supported(self._trt, precision)

    def _engine_config(self, batch: int) -> EngineConfig:
        return EngineConfig(
            precision=self.precision,
            workspace_mib=self.workspace_mib,
            min_batch=batch,
            opt_batch=batch,
            max_batch=batch,
            builder_optimization_level=self.builder_optimization_level,
            tf32=self.tf32,
            timing_cache=self.timing_cache,
        )

    def settings(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "device": self.device,
            "workspace_mib": self.workspace_mib,
            "builder_optimization_level": self.builder_optimization_level,
            "tf32": self.tf32,
            "transfers": self.transfers,
            "cuda_graph": self.cuda_graph,
            "timing_cache": self.timing_cache,
        }

    def fingerprint(self) -> dict[str, Any]:
        return {
            **host_fingerprint(),
            "accelerator": gpu_fingerprint(self.device),
            "tensorrt": self._trt.__version__,
            "versions": versions("tensorrt", "torch", "onnx"),
        }

    def session(self, model: nn.Module, input_shape: Sequence[int]) -> Session:
        if len(input_shape) < 2 or input_shape[0] < 1:
            raise ConfigError(f"input shape {list(input_shape)} needs a batch axis first, e.g. 1x3x32x32")
        engine = build_engine(
            model, input_shape, self._engine_config(int(input_shape[0])), device=self.device
        )
        runner = EngineRunner(
            engine,
            int(input_shape[0]),
            device=self.device,
            transfers=self.transfers,
            cuda_graph=self.cuda_graph,
        )
        return EngineSession(runner)
