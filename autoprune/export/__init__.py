"""Export pruned networks, one plug-in per format (``_base.ExportFormat``, ``list_formats()``): ONNX with a
parity check, and TensorRT engines with a sidecar that binds them to the GPU and TensorRT version they
were built for."""

from __future__ import annotations

from autoprune.export._base import (
    FORMATS,
    Exported,
    ExportFormat,
    ExportOptions,
    get_format,
    list_formats,
    register_format,
)
from autoprune.export.onnx import OnnxExport, export_onnx
from autoprune.export.tensorrt import TensorRTExport, check_engine, export_tensorrt, load_engine

__all__ = [
    "FORMATS",
    "ExportFormat",
    "ExportOptions",
    "Exported",
    "OnnxExport",
    "TensorRTExport",
    "check_engine",
    "export_onnx",
    "export_tensorrt",
    "get_format",
    "list_formats",
    "load_engine",
    "register_format",
]
