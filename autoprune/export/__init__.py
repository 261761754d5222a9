"""Export pruned networks: ONNX with a parity check (TensorRT engines come with the profiling issue)."""

from __future__ import annotations

from autoprune.export.onnx import OnnxExport, export_onnx

__all__ = ["OnnxExport", "export_onnx"]
