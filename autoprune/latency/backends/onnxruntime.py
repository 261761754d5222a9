"""ONNX Runtime on the CPU execution provider: the default backend where no GPU is present."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from autoprune.errors import ConfigError
from autoprune.latency._onnx import to_onnx
from autoprune.latency.backends._base import LatencyBackend, Session
from autoprune.latency.fingerprint import host_fingerprint, versions


class _OrtSession(Session):
    def __init__(self, session: Any, input_shape: Sequence[int]) -> None:
        self._session = session
        self._feed = {"input": np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)}

    def time(self, iterations: int) -> np.ndarray:
        run, feed, clock = self._session.run, self._feed, time.perf_counter_ns
        out = np.empty(iterations)
        for i in range(iterations):
            start = clock()
            run(None, feed)
            out[i] = clock() - start
        return out / 1e6


class OnnxRuntimeBackend(LatencyBackend):
    """ONNX Runtime, CPU provider, all graph optimisations, ``threads`` intra-op threads.

    One thread by default: on a small shared machine it gives the most repeatable numbers.
    """

    name = "onnxruntime"

    def __init__(self, *, threads: int = 1, precision: str = "fp32") -> None:
        if precision != "fp32":
            raise ConfigError(f"onnxruntime CPU measures fp32 only, not {precision}: pass --precision fp32")
        if threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {threads}")
        self.threads = threads
        self.precision = precision

    def settings(self) -> dict[str, Any]:
        return {"threads": self.threads, "precision": self.precision}

    def fingerprint(self) -> dict[str, Any]:
        return {**host_fingerprint(), "accelerator": None, "versions": versions("onnxruntime", "torch")}

    def session(self, model: nn.Module, input_shape: Sequence[int]) -> Session:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        onnx_bytes = to_onnx(model, torch.zeros(tuple(input_shape)))
        return _OrtSession(
            ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"]), input_shape
        )
