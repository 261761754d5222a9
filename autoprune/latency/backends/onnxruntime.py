"""ONNX Runtime: the CPU execution provider (the default backend where no GPU is present), or the CUDA
execution provider where ``onnxruntime-gpu`` is installed.

Each iteration is timed on the host clock around one ``run``; a CUDA run returns after its stream is
synchronised, so its time includes launch overhead, as ``onnxruntime_perf_test`` reports it. On CUDA the
input and output stay on the device (I/O binding) unless ``transfers`` asks for the host copies: then each
timed run binds the host input (``bind_cpu_input`` copies it to the GPU at bind time) and returns the
output to the host. A session that did not get the CUDA provider is refused, never timed on the CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from autoprune.errors import ConfigError
from autoprune.latency._onnx import to_onnx
from autoprune.latency.backends._base import LatencyBackend, Session
from autoprune.latency.fingerprint import gpu_fingerprint, host_fingerprint, versions


class _OrtSession(Session):
    def __init__(self, run: Callable[[], object]) -> None:
        self._run = run

    def time(self, iterations: int) -> np.ndarray:
        run, clock = self._run, time.perf_counter_ns
        out = np.empty(iterations)
        for i in range(iterations):
            start = clock()
            run()
            out[i] = clock() - start
        return out / 1e6


class OnnxRuntimeBackend(LatencyBackend):
    """ONNX Runtime with all graph optimisations. ``device="cpu"``: CPU provider with ``threads``
    intra-op threads (one by default: on a small shared machine it gives the most repeatable numbers).
    ``device="cuda"`` or ``"cuda:N"``: CUDA provider, fp32."""

    name = "onnxruntime"

    def __init__(
        self, *, device: str = "cpu", threads: int = 1, precision: str = "fp32", transfers: bool = False
    ) -> None:
        if precision != "fp32":
            raise ConfigError(
                f"the onnxruntime backend measures fp32 only, not {precision}: pass --precision fp32, "
                "or use --backend torch --device cuda / --backend tensorrt for fp16"
            )
        if threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {threads}")
        self.device, self.threads, self.precision, self.transfers = device, threads, precision, transfers
        kind, _, index = device.partition(":")
        if kind == "cpu" and not transfers:
            self._index = None
        elif kind == "cuda":
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ConfigError(
                    "this onnxruntime has no CUDA execution provider: pip install onnxruntime-gpu on the "
                    "GPU machine, or use --backend torch --device cuda"
                )
            self._index = int(index or 0)
        else:
            raise ConfigError(
                f"unknown --device '{device}' for onnxruntime: use cpu, cuda or cuda:N "
                "(--transfers is for GPUs only)"
            )

    def settings(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "threads": self.threads,
            "precision": self.precision,
            "transfers": self.transfers,
        }

    def fingerprint(self) -> dict[str, Any]:
        gpu = None if self._index is None else gpu_fingerprint(self._index)
        return {**host_fingerprint(), "accelerator": gpu, "versions": versions("onnxruntime", "torch")}

    def session(self, model: nn.Module, input_shape: Sequence[int]) -> Session:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        onnx_bytes = to_onnx(model, torch.zeros(tuple(input_shape)))
        x = np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)
        if self._index is None:
            cpu = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
            feed = {"input": x}
            return _OrtSession(lambda: cpu.run(None, feed))
        provider = ("CUDAExecutionProvider", {"device_id": self._index})
        gpu = ort.InferenceSession(onnx_bytes, options, providers=[provider])
        # get_available_providers() lists CUDA even when its libraries fail to load; the session then
        # falls back to the CPU with a warning, and its latencies would be CPU ones labelled as GPU ones.
        if gpu.get_providers()[:1] != ["CUDAExecutionProvider"]:
            raise ConfigError(
                f"onnxruntime {ort.__version__} could not load its CUDA execution provider (the session "
                f"runs on {', '.join(gpu.get_providers())}): install the CUDA and cuDNN versions this "
                "onnxruntime-gpu needs (its warning above names the missing library), "
                "or use --backend torch --device cuda"
            )
        binding = gpu.io_binding()
        if self.transfers:  # copies in and out belong to every timed run
            binding.bind_output("logits", "cpu")

            def run() -> None:
                binding.bind_cpu_input("input", x)  # copies x to the GPU now: so bind inside the timed call
                gpu.run_with_iobinding(binding)

            return _OrtSession(run)
        binding.bind_ortvalue_input("input", ort.OrtValue.ortvalue_from_numpy(x, "cuda", self._index))
        binding.bind_output("logits", "cuda", self._index)
        return _OrtSession(lambda: gpu.run_with_iobinding(binding))
