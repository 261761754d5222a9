"""TensorRT engine export. Tests marked ``tensorrt`` build real engines (TensorRT + a CUDA GPU) and are
skipped elsewhere; the rest check the sidecar and compatibility logic, which needs neither."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from contracts.export import ExportContract

from autoprune.config import ProtocolConfig
from autoprune.errors import BudgetError, ConfigError, ExportError
from autoprune.export._trt_format import TensorRTPlan, tensorrt_plan
from autoprune.export.tensorrt import (
    FORMAT,
    FORMAT_VERSION,
    REBUILD,
    TensorRTExport,
    check_engine,
    check_engine_compatible,
    export_tensorrt,
    parity_tolerance,
    read_sidecar,
    sidecar_path,
)
from autoprune.graph import ChannelGraph, apply_widths, narrowest_widths
from autoprune.latency.trt_engine import EngineConfig
from autoprune.models import create_model

IDENTITY = {"gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "tensorrt": "10.13.3.9"}
QUICK = ProtocolConfig(warmup_ms=20.0, iterations=10, min_round_ms=5.0, rounds=2)


def _pruned_resnet() -> torch.nn.Module:
    model = create_model("resnet20").eval()
    x = torch.zeros(1, 3, 32, 32)
    apply_widths(model, x, narrowest_widths(ChannelGraph(create_model("resnet20"), x).groups, min_ratio=0.5))
    return model


def _fake_export(tmp_path: Path, identity: dict[str, str] | None = None) -> Path:
    """An engine file and the sidecar describing it. The bytes are opaque here: only the integrity
    and identity checks read them, and nothing is run."""
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"serialized engine bytes")
    sidecar = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "engine": engine.name,
        "sha256": hashlib.sha256(engine.read_bytes()).hexdigest(),
        "identity": identity or IDENTITY,
    }
    sidecar_path(engine).write_text(json.dumps(sidecar))
    return engine


# --- Logic that runs anywhere --------------------------------------------------------------------------


def test_same_gpu_and_tensorrt_is_compatible() -> None:
    check_engine_compatible(IDENTITY, {**IDENTITY, "memory_gib": 79.1})


@pytest.mark.parametrize(
    "change",
    [
        {"gpu": "NVIDIA A100-SXM4-80GB"},
        {"compute_capability": "8.0"},
        {"tensorrt": "10.14.1.48"},
        {"tensorrt": "11.0.0"},
    ],
)
def test_other_gpu_or_tensorrt_version_is_refused_with_the_fix(change: dict[str, str]) -> None:
    with pytest.raises(ExportError) as err:
        check_engine_compatible(IDENTITY, {**IDENTITY, **change}, name="run/model.engine")
    message = str(err.value)
    assert message.startswith("run/model.engine was built for NVIDIA H100 80GB HBM3")
    assert message.endswith(REBUILD) and "\n" not in message
    assert next(iter(change.values())) in message


def test_sidecar_sits_beside_the_engine() -> None:
    assert sidecar_path("run/model.engine") == Path("run/model.json")


def test_check_engine_accepts_its_own_export(tmp_path: Path) -> None:
    engine = _fake_export(tmp_path)
    assert check_engine(engine, here=dict(IDENTITY))["identity"] == IDENTITY


def test_check_engine_refuses_another_machine(tmp_path: Path) -> None:
    engine = _fake_export(tmp_path)
    with pytest.raises(ExportError, match=r"compute 8\.0"):
        check_engine(engine, here={**IDENTITY, "gpu": "NVIDIA A100", "compute_capability": "8.0"})


def test_missing_sidecar_or_engine_is_an_error(tmp_path: Path) -> None:
    engine = _fake_export(tmp_path)
    engine.unlink()
    with pytest.raises(ExportError, match="is missing beside its sidecar"):
        check_engine(engine, here=IDENTITY)
    sidecar_path(engine).unlink()
    with pytest.raises(ExportError, match=r"model\.json is missing .*" + REBUILD):
        read_sidecar(engine)


def test_engine_replaced_after_export_is_refused(tmp_path: Path) -> None:
    engine = _fake_export(tmp_path)
    engine.write_bytes(b"another engine")
    with pytest.raises(ExportError, match="is not the engine its sidecar"):
        check_engine(engine, here=IDENTITY)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not readable JSON"),
        ('["a list"]', "not an autoprune TensorRT sidecar"),
        (json.dumps({"format": "something-else"}), "not an autoprune TensorRT sidecar"),
        (json.dumps({"format": FORMAT, "format_version": 99, "identity": IDENTITY}), "format version 99"),
        (json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION}), "does not record"),
    ],
)
def test_unreadable_sidecars_are_errors(tmp_path: Path, text: str, message: str) -> None:
    engine = _fake_export(tmp_path)
    sidecar_path(engine).write_text(text)
    with pytest.raises(ExportError, match=message) as err:
        read_sidecar(engine)
    assert str(err.value).endswith(REBUILD)


def test_parity_tolerance_loosens_with_precision() -> None:
    exact, tf32 = parity_tolerance(EngineConfig(tf32=False)), parity_tolerance(EngineConfig())
    fp16, int8 = (
        parity_tolerance(EngineConfig(precision="fp16")),
        parity_tolerance(EngineConfig(precision="int8")),
    )
    assert exact < tf32 < fp16 < int8


def test_export_checks_its_arguments_before_building(tmp_path: Path) -> None:
    model = _pruned_resnet()
    with pytest.raises(ConfigError, match="outside the engine's batch range"):
        export_tensorrt(model, [8, 3, 32, 32], tmp_path / "m.engine", config=EngineConfig(max_batch=4))
    with pytest.raises(ConfigError, match="budget must be > 0"):
        export_tensorrt(
            model, [1, 3, 32, 32], tmp_path / "m.engine", config=EngineConfig(), verify_budget_ms=0
        )
    with pytest.raises(ConfigError, match="its own sidecar"):
        export_tensorrt(model, [1, 3, 32, 32], tmp_path / "m.json", config=EngineConfig())
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_export_without_tensorrt_names_the_install(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"pip install 'autoprune\[tensorrt\]'"):
        export_tensorrt(_pruned_resnet(), [1, 3, 32, 32], tmp_path / "m.engine", config=EngineConfig())
    assert not list(tmp_path.iterdir())


SEARCHED = {  # what a search that measured with TensorRT leaves in pruned.pt's meta
    "backend": "tensorrt",
    "precision": "fp16",
    "budget_ms": 0.5,
    "backend_settings": {
        "precision": "fp16",
        "device": 1,
        "workspace_mib": 2048,
        "builder_optimization_level": 4,
        "tf32": False,
        "transfers": True,
        "cuda_graph": False,
        "timing_cache": None,
    },
    "device": {"accelerator": {"gpu": IDENTITY["gpu"], "compute_capability": "9.0"}, "tensorrt": "10.13.3.9"},
}


def _plan(meta: dict[str, Any], **given: Any) -> TensorRTPlan:
    options: dict[str, Any] = {
        "batch": 4,
        "precision": None,
        "workspace_mib": None,
        "max_batch": None,
        "device": None,
        "verify": True,
        "budget_ms": None,
    }
    return tensorrt_plan(meta, **{**options, **given})


def test_verify_measures_the_engine_the_search_profiled() -> None:
    plan = _plan(SEARCHED)
    assert plan.config == EngineConfig(
        precision="fp16",
        workspace_mib=2048,
        min_batch=4,  # the profile's engines are built for their one batch
        opt_batch=4,
        max_batch=4,
        builder_optimization_level=4,
        tf32=False,
    )
    assert (plan.device, plan.transfers, plan.cuda_graph, plan.budget_ms) == (1, True, False, 0.5)
    assert plan.searched_on == IDENTITY


def test_export_without_verify_keeps_the_search_build_settings_and_a_batch_range() -> None:
    plan = _plan(SEARCHED, verify=False, max_batch=8, device="cuda:0")
    assert plan.config.batch_range == (1, 4, 8) and plan.config.precision == "fp16"
    assert plan.device == 0 and plan.budget_ms is None and plan.searched_on is None


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"precision": "fp32"}, r"--precision fp32 \(the search's fp16\)"),
        ({"workspace_mib": 1024}, r"--workspace-mib 1024 \(the search's 2048\)"),
        ({"max_batch": 8}, "drop --max-batch"),
    ],
)
def test_verify_refuses_other_settings_than_the_search_measured(given: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        _plan(SEARCHED, **given)
    assert "\n" not in str(err.value)


def test_verify_with_its_own_budget_may_build_otherwise_but_times_as_the_profile() -> None:
    plan = _plan(SEARCHED, precision="fp32", budget_ms=2.0)
    assert plan.config.precision == "fp32" and plan.budget_ms == 2.0 and plan.searched_on is None
    assert (plan.transfers, plan.cuda_graph) == (True, False)  # still the profile's timing


def test_verify_after_another_backend_needs_a_budget_and_uses_the_tensorrt_defaults() -> None:
    meta = {
        "backend": "onnxruntime",
        "precision": "fp32",
        "budget_ms": 0.3,
        "backend_settings": {"threads": 1},
    }
    with pytest.raises(ConfigError, match=r"measured with onnxruntime fp32: pass --budget-ms"):
        _plan(meta)
    plan = _plan(meta, budget_ms=1.0)
    assert plan.config == EngineConfig(min_batch=4, opt_batch=4, max_batch=4)
    assert (plan.device, plan.transfers, plan.cuda_graph) == (0, False, True)


@pytest.mark.tensorrt
class TestTensorRTFormat(ExportContract):
    name = "tensorrt"


def _save_run(run: Path, meta: dict[str, Any]) -> Path:
    """A run directory whose pruned.pt carries the search's ``meta``."""
    from autoprune.prune import prune_model, save_pruned

    x = torch.zeros(1, 3, 32, 32)
    pruned = prune_model(
        create_model("resnet20"),
        widths=narrowest_widths(ChannelGraph(create_model("resnet20"), x).groups, min_ratio=0.5),
        model_spec="resnet20",
        num_classes=10,
        input_shape=[1, 3, 32, 32],
    )
    pruned.meta = meta
    save_pruned(run / "pruned.pt", pruned)
    return run


def test_verify_refuses_another_gpu_than_the_search_measured_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from autoprune import api
    from autoprune.export import _trt_format

    run = _save_run(tmp_path, SEARCHED)
    here = {**IDENTITY, "gpu": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0"}
    monkeypatch.setattr(_trt_format, "trt_fingerprint", lambda device: here)
    with pytest.raises(ConfigError, match=r"cuda:1 is NVIDIA A100-SXM4-80GB .*export on the profiled GPU"):
        api.export(run, format="tensorrt", verify=True)
    assert not list(run.glob("*.engine"))


# --- Real TensorRT -------------------------------------------------------------------------------------


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_round_trip_matches_torch_and_describes_itself(tmp_path: Path, precision: str) -> None:
    from autoprune.export.tensorrt import load_engine
    from autoprune.latency.trt_engine import trt_fingerprint

    model = _pruned_resnet()
    config = EngineConfig(precision=precision, min_batch=1, opt_batch=2, max_batch=4)
    result = export_tensorrt(model, [2, 3, 32, 32], tmp_path / "m.engine", config=config)
    assert result.max_abs_diff <= result.tolerance and result.onnx_max_abs_diff is not None
    assert result.latency is None and result.path.is_file()
    side = check_engine(result.path)
    assert side["identity"] == trt_fingerprint() and side["precision"] == precision
    assert side["batch_range"] == [1, 2, 4] and EngineConfig.from_dict(side["engine_config"]) == config
    assert side["inputs"] == [{"name": "input", "dtype": "float32", "shape": [-1, 3, 32, 32]}]
    assert side["outputs"][0]["name"] == "logits" and side["outputs"][0]["dtype"] == "float32"
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with load_engine(result.path, 4) as runner:
        got = runner.run(x.cuda())["logits"].cpu()
    with torch.no_grad():
        expected = model(x)
    atol, rtol = parity_tolerance(config)
    assert (got - expected).abs().max() <= atol + rtol * expected.abs().max()


@pytest.mark.tensorrt
def test_over_budget_is_a_budget_error_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(BudgetError, match=r"over the budget of 0\.0001 ms") as err:
        export_tensorrt(
            _pruned_resnet(),
            [1, 3, 32, 32],
            tmp_path / "m.engine",
            config=EngineConfig(),
            verify_budget_ms=1e-4,
            protocol=QUICK,
        )
    assert "--budget-ms" in str(err.value)
    assert not list(tmp_path.iterdir())


@pytest.mark.tensorrt
def test_within_budget_records_the_measurement(tmp_path: Path) -> None:
    result = export_tensorrt(
        _pruned_resnet(),
        [1, 3, 32, 32],
        tmp_path / "m.engine",
        config=EngineConfig(),
        verify_budget_ms=1e3,
        protocol=QUICK,
    )
    assert result.latency is not None and 0 < result.latency.median_ms <= 1e3
    side = read_sidecar(result.path)
    assert side["latency"]["median_ms"] == result.latency.median_ms
    measured = side["measured"]
    assert measured["budget_ms"] == 1e3 and measured["transfers"] is False and measured["cuda_graph"] is True
    assert measured["cuda_graph_used"] is True and isinstance(measured["enqueue_bound"], bool)


@pytest.mark.tensorrt
def test_verify_times_the_engine_as_the_search_profile_did(tmp_path: Path) -> None:
    from autoprune import api
    from autoprune.latency import get_backend

    backend = get_backend("tensorrt", transfers=True, cuda_graph=False)
    meta = {
        "backend": "tensorrt",
        "precision": "fp32",
        "budget_ms": 1e3,
        "backend_settings": backend.settings(),
        "device": backend.fingerprint(),
    }
    result = api.export(_save_run(tmp_path, meta), format="tensorrt", verify=True)
    assert isinstance(result, TensorRTExport)
    side = read_sidecar(result.path)
    assert side["batch_range"] == [1, 1, 1] and side["measured"]["budget_ms"] == 1e3
    assert side["measured"]["transfers"] is True and side["measured"]["cuda_graph"] is False
    assert side["measured"]["cuda_graph_used"] is False
