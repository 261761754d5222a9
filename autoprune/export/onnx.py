"""Pruned network -> ONNX file, written only once onnxruntime reproduces torch's outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from autoprune._io import atomic_path
from autoprune.errors import ExportError
from autoprune.export._base import ExportFormat, ExportOptions
from autoprune.latency._onnx import export_onnx_bytes
from autoprune.prune import PrunedModel


@dataclass(frozen=True)
class OnnxExport:
    path: Path
    max_abs_diff: float
    tolerance: float
    exporter: str = "torchscript"  # or "dynamo", when the TorchScript exporter cannot export an op


def export_onnx(
    model: nn.Module,
    input_shape: list[int],
    path: str | Path,
    *,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    seed: int = 0,
) -> OnnxExport:
    """Export with a dynamic batch axis and check parity on a random batch of two: the largest absolute
    difference must be within ``atol + rtol * max|torch output|``, else ExportError and no file. An op the
    TorchScript exporter cannot export is tried with the dynamo exporter; when neither can, ExportError
    names the op and its module."""
    model = model.eval()
    example = torch.zeros(1, *input_shape[1:])
    x = torch.randn(2, *input_shape[1:], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = model(x).numpy()
    tolerance = atol + rtol * float(np.abs(expected).max())
    data, exporter = export_onnx_bytes(model, example, dynamic_batch=True)
    result = _compare(data, x, expected)
    if not (isinstance(result, float) and result <= tolerance) and exporter == "torchscript":
        # A TorchScript graph onnxruntime cannot run or that disagrees with torch (e.g. a shape fixed at
        # the traced batch of one) gets a second chance from the dynamo exporter.
        try:
            data, exporter = export_onnx_bytes(model, example, dynamic_batch=True, exporter="dynamo")
        except Exception:
            pass  # the TorchScript graph's problem is the one to report
        else:
            result = _compare(data, x, expected)
    if isinstance(result, str):
        raise ExportError(
            f"onnxruntime cannot run the exported network ({result}): the ONNX exporters translate an op "
            "of this model wrongly; report it with the model spec, or use the torch backend"
        )
    if not result <= tolerance:
        raise ExportError(
            f"ONNX output differs from torch by {result:.3g} (> {tolerance:.3g}): the model uses an op "
            "the exporter translates inexactly; report it with the model spec"
        )
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return OnnxExport(Path(path), result, tolerance, exporter)


def _compare(data: bytes, x: torch.Tensor, expected: np.ndarray) -> float | str:
    """The largest |onnxruntime - torch| on ``x``, or why onnxruntime could not load or run the graph."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # a failure is reported in our one line, not logged by onnxruntime too
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {"input": x.numpy()})
    except Exception as exc:  # onnxruntime's own errors: a graph it cannot load or run
        return f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
    if got.shape != expected.shape:
        return f"output of shape {got.shape}, torch's is {expected.shape}"
    return float(np.abs(got - expected).max())


class OnnxFormat(ExportFormat):
    name = "onnx"
    help = "ONNX with a dynamic batch axis, parity-checked in onnxruntime"

    def default_path(self, pruned: PrunedModel, pruned_file: Path, options: ExportOptions) -> Path:
        return pruned_file.with_name("model.onnx")

    def export(self, pruned: PrunedModel, path: Path, options: ExportOptions) -> OnnxExport:
        return export_onnx(pruned.module, pruned.input_shape, path)
