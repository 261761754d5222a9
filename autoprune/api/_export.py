"""``autoprune export``: a pruned network to ONNX or a TensorRT engine."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from autoprune.config import ProtocolConfig
from autoprune.data import load_dataset
from autoprune.errors import ConfigError
from autoprune.export import OnnxExport, TensorRTExport, export_onnx, export_tensorrt
from autoprune.latency import EngineConfig, cuda_index
from autoprune.prune import load_pruned


def export(
    source: str | Path,
    *,
    format: str = "onnx",
    out: str | Path | None = None,
    precision: str = "fp32",
    max_batch: int | None = None,
    workspace_mib: int = 1024,
    verify: bool = False,
    budget_ms: float | None = None,
    calibration_data: str | None = None,
    calibration_batches: int = 16,
    device: int | str = 0,
) -> OnnxExport | TensorRTExport:
    """Export a run directory's ``pruned.pt`` (or that file): ``onnx`` (parity-checked in onnxruntime)
    or ``tensorrt`` (an engine built with the tensorrt backend's settings, parity-checked against torch,
    measured, with a JSON sidecar). ``verify`` fails when the engine measures over ``budget_ms`` (default:
    the search's budget, when the search measured with this TensorRT precision)."""
    src = Path(source)
    pruned_file = src / "pruned.pt" if src.is_dir() else src
    pruned = load_pruned(pruned_file)
    if format == "onnx":
        return export_onnx(
            pruned.module, pruned.input_shape, Path(out) if out else pruned_file.with_name("model.onnx")
        )
    if format != "tensorrt":
        raise ConfigError(f"unknown --format {format}: use onnx or tensorrt")
    batch = int(pruned.input_shape[0])
    config = EngineConfig(
        precision=precision,
        workspace_mib=workspace_mib,
        min_batch=1,
        opt_batch=batch,
        max_batch=max(batch, max_batch or batch),
    )
    if verify and budget_ms is None:
        budget_ms = _search_budget_for(pruned.meta, precision)
    calibration = None
    if calibration_data is not None:
        if precision != "int8":
            raise ConfigError("--calib-data calibrates int8 only: drop it, or pass --precision int8")
        ds = load_dataset(calibration_data, image_size=int(pruned.input_shape[-1]))
        loader = DataLoader(
            ds.train, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(0)
        )
        calibration = [x for x, _ in itertools.islice(loader, calibration_batches)]
    return export_tensorrt(
        pruned.module,
        pruned.input_shape,
        Path(out) if out else pruned_file.with_name(f"model.{precision}.engine"),
        config=config,
        calibration=calibration,
        verify_budget_ms=budget_ms if verify else None,
        protocol=ProtocolConfig(),
        device=cuda_index(device),
    )


def _search_budget_for(meta: dict[str, Any], precision: str) -> float:
    """The search's budget, if it was measured like this engine will be; else ask for one."""
    searched = f"{meta.get('backend')} {meta.get('precision', 'fp32')}"
    if meta.get("backend") != "tensorrt" or meta.get("precision", "fp32") != precision:
        raise ConfigError(
            f"--verify needs a TensorRT budget, but the search measured with {searched}: pass --budget-ms"
        )
    return float(meta["budget_ms"])
