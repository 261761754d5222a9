"""Pruned network -> ONNX file, written only once onnxruntime reproduces torch's outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from autoprune._io import atomic_path
from autoprune.errors import ExportError
from autoprune.latency import to_onnx


@dataclass(frozen=True)
class OnnxExport:
    path: Path
    max_abs_diff: float
    tolerance: float


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
    difference must be within ``atol + rtol * max|torch output|``, else ExportError and no file."""
    import onnxruntime as ort

    model = model.eval()
    data = to_onnx(model, torch.zeros(1, *input_shape[1:]), dynamic_batch=True)
    x = torch.randn(2, *input_shape[1:], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x.numpy()})
    diff = float(np.abs(got - expected).max())
    tolerance = atol + rtol * float(np.abs(expected).max())
    if not diff <= tolerance:
        raise ExportError(
            f"ONNX output differs from torch by {diff:.3g} (> {tolerance:.3g}): the model uses an op the "
            "exporter translates inexactly; report it with the model spec"
        )
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return OnnxExport(Path(path), diff, tolerance)
