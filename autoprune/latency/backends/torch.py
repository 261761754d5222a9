"""PyTorch eager on the CPU. (CUDA timing with CUDA events is the profiling issue's work.)"""

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
from autoprune.latency.fingerprint import host_fingerprint, versions


class _TorchSession(Session):
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


class TorchBackend(LatencyBackend):
    """Eager PyTorch inference with ``threads`` intra-op threads (set process-wide while timing)."""

    name = "torch"

    def __init__(self, *, threads: int = 1, device: str = "cpu", precision: str = "fp32") -> None:
        if device != "cpu":
            raise ConfigError(
                f"the torch backend measures on cpu only so far, not '{device}': pass --device cpu"
            )
        if precision != "fp32":
            raise ConfigError(f"the torch CPU backend measures fp32 only, not {precision}")
        if threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {threads}")
        self.threads, self.device, self.precision = threads, device, precision

    def settings(self) -> dict[str, Any]:
        return {"threads": self.threads, "device": self.device, "precision": self.precision}

    def fingerprint(self) -> dict[str, Any]:
        return {**host_fingerprint(), "accelerator": None, "versions": versions("torch")}

    def session(self, model: nn.Module, input_shape: Sequence[int]) -> Session:
        return _TorchSession(copy.deepcopy(model).eval(), input_shape, self.threads)
