"""``export --format tensorrt``: the engine built with the tensorrt latency backend's settings (those the
search measured with, unless given), parity-checked against torch, optionally measured against the
budget (``--verify``), with a sidecar binding it to its GPU and TensorRT (``export.tensorrt``)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from autoprune.config import ProtocolConfig
from autoprune.data import load_dataset
from autoprune.errors import ConfigError
from autoprune.export._base import ExportFormat, ExportOptions
from autoprune.export.tensorrt import TensorRTExport, export_tensorrt
from autoprune.latency import EngineConfig, cuda_index
from autoprune.latency.trt_engine import engine_mismatch, trt_fingerprint
from autoprune.prune import PrunedModel


class TensorRTFormat(ExportFormat):
    name = "tensorrt"
    help = "a TensorRT engine + JSON sidecar, parity-checked against torch (like trtexec --saveEngine)"

    def default_path(self, pruned: PrunedModel, pruned_file: Path, options: ExportOptions) -> Path:
        precision = options.precision or _searched_settings(pruned.meta).get("precision", "fp32")
        return pruned_file.with_name(f"model.{precision}.engine")

    def export(self, pruned: PrunedModel, path: Path, options: ExportOptions) -> TensorRTExport:
        plan = tensorrt_plan(
            pruned.meta,
            batch=int(pruned.input_shape[0]),
            precision=options.precision,
            workspace_mib=options.workspace_mib,
            max_batch=options.max_batch,
            device=options.device,
            verify=options.verify,
            budget_ms=options.budget_ms,
        )
        if plan.searched_on is not None:  # the search's budget holds on the GPU and TensorRT it measured on
            here = trt_fingerprint(plan.device)
            if engine_mismatch(plan.searched_on, here) is not None:
                was = plan.searched_on
                raise ConfigError(
                    f"--verify checks the search's budget, measured on {was.get('gpu')} with TensorRT "
                    f"{was.get('tensorrt')}, but cuda:{plan.device} is {here.get('gpu')} with TensorRT "
                    f"{here.get('tensorrt')}: export on the profiled GPU, or pass --budget-ms"
                )
        config = plan.config
        calibration = None
        if options.calibration_data is not None:
            if config.precision != "int8":
                raise ConfigError("--calib-data calibrates int8 only: drop it, or pass --precision int8")
            ds = load_dataset(options.calibration_data, image_size=int(pruned.input_shape[-1]))
            loader = DataLoader(
                ds.train,
                batch_size=config.opt_batch,
                shuffle=True,
                generator=torch.Generator().manual_seed(0),
            )
            calibration = [x for x, _ in itertools.islice(loader, options.calibration_batches)]
        return export_tensorrt(
            pruned.module,
            pruned.input_shape,
            path,
            config=config,
            calibration=calibration,
            verify_budget_ms=plan.budget_ms if options.verify else None,
            protocol=ProtocolConfig(),
            device=plan.device,
            transfers=plan.transfers,
            cuda_graph=plan.cuda_graph,
        )


def _searched_settings(meta: dict[str, Any]) -> dict[str, Any]:
    """The tensorrt backend settings the search measured with ({} when it measured with another)."""
    return dict(meta.get("backend_settings") or {}) if meta.get("backend") == "tensorrt" else {}


@dataclass(frozen=True)
class TensorRTPlan:
    """How ``export --format tensorrt`` builds and measures: the engine, the GPU, the timing options of
    the tensorrt backend, the budget to verify, and the identity the search measured on (when its
    budget is the one verified)."""

    config: EngineConfig
    device: int
    transfers: bool
    cuda_graph: bool
    budget_ms: float | None
    searched_on: dict[str, Any] | None


def tensorrt_plan(
    meta: dict[str, Any],
    *,
    batch: int,
    precision: str | None,
    workspace_mib: int | None,
    max_batch: int | None,
    device: int | str | None,
    verify: bool,
    budget_ms: float | None,
) -> TensorRTPlan:
    """Resolve the export's settings against the search's ``meta`` (pure: no GPU needed). Settings not
    given are the search's tensorrt backend settings, else the backend's defaults."""
    searched = meta.get("backend_settings") if meta.get("backend") == "tensorrt" else None
    base: dict[str, Any] = dict(searched or {})
    chosen: dict[str, Any] = {
        "precision": precision or base.get("precision", "fp32"),
        "workspace_mib": workspace_mib or base.get("workspace_mib", 1024),
    }
    built: dict[str, Any] = {
        "builder_optimization_level": base.get("builder_optimization_level", 3),
        "tf32": base.get("tf32", True),
    }
    index = cuda_index(base.get("device", 0) if device is None else device)
    if verify and max_batch is not None and max_batch != batch:
        raise ConfigError(
            f"--verify measures the engine as the profile built it, for batch {batch} alone: drop "
            "--max-batch, or export the wider engine in a second run without --verify"
        )
    lo, hi = (batch, batch) if verify else (1, max(batch, max_batch or batch))
    config = EngineConfig(**chosen, **built, min_batch=lo, opt_batch=batch, max_batch=hi)
    searched_on = None
    if verify and budget_ms is None:
        budget_ms, searched_on = _searched_budget(meta, searched, chosen)
    return TensorRTPlan(
        config=config,
        device=index,
        transfers=bool(base.get("transfers", False)),
        cuda_graph=bool(base.get("cuda_graph", True)),
        budget_ms=budget_ms,
        searched_on=searched_on,
    )


def _searched_budget(
    meta: dict[str, Any], searched: dict[str, Any] | None, chosen: dict[str, Any]
) -> tuple[float, dict[str, Any]]:
    """The search's own budget for ``--verify`` (and the GPU it was searched on), or a one-line
    ConfigError where it does not hold for the engine asked for."""
    if searched is None:
        what = f"{meta.get('backend')} {meta.get('precision', 'fp32')}"
        raise ConfigError(
            f"--verify needs a TensorRT budget, but the search measured with {what}: pass --budget-ms"
        )
    differ = [
        f"--{key.replace('_', '-')} {value} (the search's {searched.get(key)})"
        for key, value in chosen.items()
        if value != searched.get(key)
    ]
    if differ:
        raise ConfigError(
            f"--verify checks the search's budget, which holds for the engine the search measured, but "
            f"this export asks for {', '.join(differ)}: drop those options, or pass --budget-ms"
        )
    if meta.get("budget_ms") is None:
        raise ConfigError(
            "the search had no latency budget (only --max-accuracy-drop) for --verify to check: "
            "pass --budget-ms"
        )
    accelerator = (meta.get("device") or {}).get("accelerator") or {}
    searched_on = {
        "gpu": accelerator.get("gpu"),
        "compute_capability": accelerator.get("compute_capability"),
        "tensorrt": (meta.get("device") or {}).get("tensorrt"),
    }
    return float(meta["budget_ms"]), searched_on
