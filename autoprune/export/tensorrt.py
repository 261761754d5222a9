"""Pruned network -> TensorRT engine file plus a JSON sidecar, written only once the engine reproduces
torch's outputs (and, when asked, meets a latency budget by measurement on this GPU).

The engine is built by :func:`autoprune.latency.trt_engine.build_engine`, the code the tensorrt latency
backend profiles with, so the exported engine is the one that was measured. An engine runs only on the
GPU model and the exact TensorRT version it was built with (TensorRT's default hardware and version
compatibility), so the sidecar records both and :func:`check_engine` refuses any other machine.

Parity tolerance (largest absolute difference <= ``atol + rtol * max|torch output|``, torch in true fp32
on the same GPU, TF32 off): fp32 ``1e-4 + 1e-3`` (``1e-3 + 2e-2`` when TF32 convolutions are allowed,
TensorRT's default: TF32 keeps fp16's 10-bit mantissa); fp16 ``1e-3 + 5e-2``; int8 ``5e-2 + 0.5``: int8
parity only catches a broken engine (wrong bindings, garbage), it says nothing of accuracy, which must be
validated on data, the more so when calibrated on random inputs.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from autoprune import __version__
from autoprune._io import atomic_path, write_json
from autoprune.config import ProtocolConfig
from autoprune.errors import BudgetError, ConfigError, ExportError
from autoprune.latency._onnx import to_onnx
from autoprune.latency.fingerprint import gpu_fingerprint
from autoprune.latency.protocol import LatencyStats, measure
from autoprune.latency.trt_engine import (
    EngineConfig,
    EngineRunner,
    EngineSession,
    build_engine,
    engine_mismatch,
    require_cuda,
    require_tensorrt,
    trt_fingerprint,
)

FORMAT = "autoprune-tensorrt-engine"
FORMAT_VERSION = 1
REBUILD = "rebuild it on this machine with autoprune export --format tensorrt"


@dataclass(frozen=True)
class TensorRTExport:
    path: Path
    sidecar: Path
    max_abs_diff: float
    tolerance: float
    onnx_max_abs_diff: float | None
    latency: LatencyStats | None


def sidecar_path(path: str | Path) -> Path:
    """``model.engine`` -> ``model.json``."""
    return Path(path).with_suffix(".json")


def parity_tolerance(config: EngineConfig) -> tuple[float, float]:
    """``(atol, rtol)`` for comparing an engine of ``config`` with torch in fp32 (module docstring)."""
    if config.precision == "int8":
        return 5e-2, 0.5
    if config.precision == "fp16":
        return 1e-3, 5e-2
    return (1e-3, 2e-2) if config.tf32 else (1e-4, 1e-3)


def check_engine_compatible(built: dict[str, Any], here: dict[str, Any], *, name: str = "the engine") -> None:
    """Raise ExportError unless an engine built with identity ``built`` may run on ``here`` (both as
    :func:`~autoprune.latency.trt_engine.trt_fingerprint` returns them). Pure: no TensorRT needed."""
    if engine_mismatch(built, here) is not None:
        raise ExportError(
            f"{name} was built for {built.get('gpu')} (compute {built.get('compute_capability')}) with "
            f"TensorRT {built.get('tensorrt')}, but this machine has {here.get('gpu')} (compute "
            f"{here.get('compute_capability')}) with TensorRT {here.get('tensorrt')}: {REBUILD}"
        )


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The sidecar of engine ``path``, checked for its format."""
    side = sidecar_path(path)
    if not side.is_file():
        raise ExportError(
            f"{side} is missing (it says which GPU and TensorRT built {Path(path).name}): {REBUILD}"
        )
    try:
        data = json.loads(side.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{side} is not readable JSON ({exc}): {REBUILD}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ExportError(f"{side} is not an autoprune TensorRT sidecar: {REBUILD}")
    if data.get("format_version") != FORMAT_VERSION:
        raise ExportError(
            f"{side} has format version {data.get('format_version')}, this autoprune reads {FORMAT_VERSION}: "
            f"{REBUILD}"
        )
    if not isinstance(data.get("identity"), dict):
        raise ExportError(f"{side} does not record the engine's GPU and TensorRT version: {REBUILD}")
    return data


def check_engine(path: str | Path, here: dict[str, Any] | None = None, *, device: int = 0) -> dict[str, Any]:
    """Read engine ``path``'s sidecar and refuse (ExportError) an engine that is missing, is not the one
    the sidecar describes, or was built for another GPU or TensorRT version than ``here`` (default: this
    machine's :func:`trt_fingerprint` on ``device``). Returns the sidecar."""
    side = read_sidecar(path)
    engine = Path(path)
    if not engine.is_file():
        raise ExportError(f"{engine} is missing beside its sidecar: {REBUILD}")
    if hashlib.sha256(engine.read_bytes()).hexdigest() != side.get("sha256"):
        raise ExportError(
            f"{engine} is not the engine its sidecar {sidecar_path(path).name} describes: {REBUILD}"
        )
    check_engine_compatible(
        side["identity"], trt_fingerprint(device) if here is None else here, name=str(engine)
    )
    return side


def load_engine(
    path: str | Path,
    batch: int | None = None,
    *,
    device: int = 0,
    transfers: bool = False,
    cuda_graph: bool = False,
) -> EngineRunner:
    """:func:`check_engine`, then an :class:`EngineRunner` on it (``batch`` default: the profile's opt)."""
    check_engine(path, device=device)
    return EngineRunner(
        Path(path).read_bytes(), batch, device=device, transfers=transfers, cuda_graph=cuda_graph
    )


def _onnx_parity(model: nn.Module, x: Tensor) -> float:
    """The fp32 ONNX graph in onnxruntime (CPU) vs torch on the CPU, as ``export_onnx`` checks it: tells an
    exporter problem apart from a TensorRT one."""
    import onnxruntime as ort

    cpu = copy.deepcopy(model).float().cpu().eval()
    data = to_onnx(cpu, torch.zeros(1, *x.shape[1:]), dynamic_batch=True)
    with torch.no_grad():
        expected = cpu(x).numpy()
    (got,) = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})
    diff = float(np.abs(got - expected).max())
    tolerance = 1e-4 + 1e-3 * float(np.abs(expected).max())
    if not diff <= tolerance:
        raise ExportError(
            f"ONNX output differs from torch by {diff:.3g} (> {tolerance:.3g}) before TensorRT sees it: the "
            "model uses an op the exporter translates inexactly; report it with the model spec"
        )
    return diff


def _torch_fp32(model: nn.Module, x: Tensor, device: torch.device) -> Tensor:
    """The reference: ``model`` in true fp32 on the GPU (TF32 off for convolutions and matmuls)."""
    ref = copy.deepcopy(model).float().to(device).eval()
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.no_grad():
            return ref(x.to(device))
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def export_tensorrt(
    model: nn.Module,
    input_shape: list[int],
    path: str | Path,
    *,
    config: EngineConfig,
    calibration: Iterable[Tensor] | None = None,
    verify_budget_ms: float | None = None,
    protocol: ProtocolConfig | None = None,
    onnx_parity: bool = True,
    device: int = 0,
    transfers: bool = False,
    cuda_graph: bool = True,
    seed: int = 0,
) -> TensorRTExport:
    """Build ``model``'s engine for ``config`` on CUDA ``device``, check it against torch on a random
    batch of ``input_shape`` (its batch must lie in ``config``'s batch range), optionally measure it, and
    write ``path`` (the engine) and ``sidecar_path(path)`` atomically.

    ``onnx_parity`` first checks the fp32 ONNX graph in onnxruntime. The engine is measured under
    ``protocol`` (default ``ProtocolConfig()``) when ``verify_budget_ms`` or ``protocol`` is given, as the
    tensorrt backend times: ``transfers`` and ``cuda_graph`` as its options of the same names (pass the
    profile's, so the budget means the same thing); over the budget is a BudgetError. Any failure writes
    nothing."""
    _check_request(input_shape, path, config, verify_budget_ms)
    require_tensorrt()
    require_cuda(device)
    model = model.eval()
    batch = int(input_shape[0])
    x = torch.randn(tuple(input_shape), generator=torch.Generator().manual_seed(seed))
    onnx_diff = _onnx_parity(model, x) if onnx_parity else None
    engine = build_engine(model, input_shape, config, calibration=calibration, device=device)
    measuring = verify_budget_ms is not None or protocol is not None
    protocol = protocol or ProtocolConfig()
    with EngineRunner(
        engine, batch, device=device, transfers=transfers, cuda_graph=cuda_graph and measuring
    ) as runner:
        diff, tolerance = _engine_parity(runner, model, x, config, torch.device("cuda", device))
        io = runner.io_spec()
        stats: LatencyStats | None = None
        measured_with: dict[str, Any] = {}
        if measuring:
            session = EngineSession(runner)
            stats = measure(session, protocol)
            measured_with = session.info()
    gpu = gpu_fingerprint(device)
    if verify_budget_ms is not None and stats is not None and stats.median_ms > verify_budget_ms:
        raise BudgetError(
            f"the {config.precision} engine measures {stats.median_ms:.4f} ms on {gpu['gpu']}, over the "
            f"budget of {verify_budget_ms:.4f} ms: search again with a lower --budget-ms to leave headroom"
        )
    sidecar = _sidecar(
        path, engine, config, device=device, gpu=gpu, io=io, seed=seed, onnx_diff=onnx_diff,
        parity=(diff, tolerance, batch), calibrated=calibration is not None, stats=stats,
        measured=None if stats is None else {
            "batch": batch, "transfers": transfers, "cuda_graph": cuda_graph,
            "cuda_graph_used": measured_with["cuda_graph"], "enqueue_bound": measured_with["enqueue_bound"],
            "protocol": protocol.to_dict(), "budget_ms": verify_budget_ms,
        },
    )  # fmt: skip
    with atomic_path(path) as tmp:
        tmp.write_bytes(engine)
    write_json(sidecar_path(path), sidecar)
    return TensorRTExport(Path(path), sidecar_path(path), diff, tolerance, onnx_diff, stats)


def _sidecar(
    path: str | Path,
    engine: bytes,
    config: EngineConfig,
    *,
    device: int,
    gpu: dict[str, Any],
    io: dict[str, Any],
    seed: int,
    onnx_diff: float | None,
    parity: tuple[float, float, int],
    calibrated: bool,
    stats: LatencyStats | None,
    measured: dict[str, Any] | None,
) -> dict[str, Any]:
    """What the engine's sidecar JSON records: the engine's identity and build, its parity (max abs
    difference, tolerance, batch) and, where it was measured, its latency and how."""
    diff, tolerance, batch = parity
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "engine": Path(path).name,
        "sha256": hashlib.sha256(engine).hexdigest(),
        "identity": trt_fingerprint(device),
        "accelerator": gpu,
        "precision": config.precision,
        "engine_config": config.to_dict(),
        "batch_range": list(config.batch_range),
        **io,
        "parity": {"max_abs_diff": diff, "tolerance": tolerance, "batch": batch, "seed": seed},
        "onnx_parity": onnx_diff,
        "calibration": ("data" if calibrated else "random") if config.precision == "int8" else None,
        "latency": None if stats is None else stats.to_dict(),
        "measured": measured,
        "autoprune_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _check_request(
    input_shape: list[int], path: str | Path, config: EngineConfig, verify_budget_ms: float | None
) -> None:
    """What a user can get wrong, refused before TensorRT or CUDA is touched."""
    if verify_budget_ms is not None and not verify_budget_ms > 0:
        raise ConfigError(f"the latency budget must be > 0 ms, got {verify_budget_ms}")
    batch = int(input_shape[0])
    if not config.min_batch <= batch <= config.max_batch:
        raise ConfigError(
            f"input batch {batch} is outside the engine's batch range {list(config.batch_range)}: "
            "pass an input shape whose batch lies in it"
        )
    if sidecar_path(path) == Path(path):
        raise ConfigError(f"{path} would be overwritten by its own sidecar: name the engine <name>.engine")


def _engine_parity(
    runner: EngineRunner, model: nn.Module, x: Tensor, config: EngineConfig, cuda: torch.device
) -> tuple[float, float]:
    """The engine's largest difference from torch fp32 on ``x`` and the tolerance for its precision;
    beyond it is an ExportError."""
    (got,) = runner.run(x.to(cuda)).values()
    expected = _torch_fp32(model, x, cuda)
    diff = float((got.float() - expected).abs().max())
    atol, rtol = parity_tolerance(config)
    tolerance = atol + rtol * float(expected.abs().max())
    if not diff <= tolerance:
        raise ExportError(
            f"the {config.precision} TensorRT engine differs from torch by {diff:.3g} "
            f"(> {tolerance:.3g}): export fp32, or report it with the model spec"
        )
    return diff, tolerance
