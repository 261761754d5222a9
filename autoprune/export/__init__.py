"""Export pruned networks: ONNX with a parity check, and TensorRT engines with a sidecar that binds
them to the GPU and TensorRT version they were built for."""

from __future__ import annotations

from autoprune.export.onnx import OnnxExport, export_onnx
from autoprune.export.tensorrt import TensorRTExport, check_engine, export_tensorrt, load_engine

__all__ = ["OnnxExport", "TensorRTExport", "check_engine", "export_onnx", "export_tensorrt", "load_engine"]
