"""``autoprune export``: a pruned network to a file in one of the export formats (``autoprune.export``)."""

from __future__ import annotations

from pathlib import Path

from autoprune.export import Exported, ExportOptions, get_format
from autoprune.prune import load_pruned


def export(
    source: str | Path,
    *,
    format: str = "onnx",
    out: str | Path | None = None,
    precision: str | None = None,
    max_batch: int | None = None,
    workspace_mib: int | None = None,
    verify: bool = False,
    budget_ms: float | None = None,
    calibration_data: str | None = None,
    calibration_batches: int = 16,
    device: int | str | None = None,
) -> Exported:
    """Export a run directory's ``pruned.pt`` (or that file): ``onnx`` (parity-checked in onnxruntime)
    or ``tensorrt`` (an engine built with the tensorrt backend's settings, parity-checked against torch,
    measured, with a JSON sidecar). ``precision``, ``workspace_mib`` and ``device`` default to the
    search's when it measured with TensorRT (else fp32, 1024 MiB, cuda:0). ``verify`` measures the
    engine as the search's profile timed it (fixed batch, its transfers and CUDA graph settings) and
    fails when it measures over ``budget_ms``; without one, the search's budget, which holds only for
    the engine the search measured: other build settings or another GPU are refused."""
    src = Path(source)
    pruned_file = src / "pruned.pt" if src.is_dir() else src
    kind = get_format(format)
    pruned = load_pruned(pruned_file)
    options = ExportOptions(
        precision=precision, max_batch=max_batch, workspace_mib=workspace_mib, verify=verify,
        budget_ms=budget_ms, calibration_data=calibration_data, calibration_batches=calibration_batches,
        device=device,
    )  # fmt: skip
    return kind.export(pruned, Path(out) if out else kind.default_path(pruned, pruned_file, options), options)
