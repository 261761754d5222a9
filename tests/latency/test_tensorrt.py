"""The tensorrt backend and the shared engine settings. Tests marked ``tensorrt`` need TensorRT and a CUDA
GPU: skipped where either is absent, failed where installed but broken (tests/hardware.py). The rest
check the logic that does not (settings validation, the fp16 graph, the engine identity, the timing
cache, the errors a machine without TensorRT gives)."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from contracts.backend import BackendContract

from autoprune.errors import ConfigError
from autoprune.latency import device_identity, get_backend
from autoprune.latency.trt_engine import (
    EngineConfig,
    check_precision_supported,
    cuda_index,
    engine_mismatch,
    engine_onnx,
    require_cuda,
)
from autoprune.models import create_model

IDENTITY = {"gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "tensorrt": "10.13.3.9"}


# --- Logic that runs anywhere --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "int4"}, "unknown precision 'int4'"),
        ({"workspace_mib": 0}, "workspace-mib must be >= 1"),
        ({"min_batch": 2, "opt_batch": 1, "max_batch": 4}, "1 <= min <= opt <= max"),
        ({"min_batch": 1, "opt_batch": 8, "max_batch": 4}, "1 <= min <= opt <= max"),
        ({"min_batch": 0, "opt_batch": 1, "max_batch": 1}, "1 <= min <= opt <= max"),
        ({"builder_optimization_level": 6}, "0-5"),
        ({"calibration_cache": "calib.cache"}, "int8 only"),
    ],
)
def test_engine_config_rejects_bad_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        EngineConfig(**kwargs)
    assert "\n" not in str(err.value)


def test_engine_config_round_trips_and_names_its_batch_range() -> None:
    config = EngineConfig(
        precision="int8", min_batch=1, opt_batch=4, max_batch=8, calibration_cache="c.cache", tf32=False
    )
    assert EngineConfig.from_dict(config.to_dict()) == config
    assert config.batch_range == (1, 4, 8)
    with pytest.raises(ConfigError, match="no settings"):
        EngineConfig.from_dict({**config.to_dict(), "fp16": True})


def test_engine_identity_must_match_on_gpu_compute_capability_and_tensorrt_version() -> None:
    assert engine_mismatch(IDENTITY, dict(IDENTITY)) is None
    assert "gpu" in str(engine_mismatch(IDENTITY, {**IDENTITY, "gpu": "NVIDIA A100-SXM4-80GB"}))
    assert "compute_capability" in str(engine_mismatch(IDENTITY, {**IDENTITY, "compute_capability": "8.0"}))
    assert "tensorrt" in str(engine_mismatch(IDENTITY, {**IDENTITY, "tensorrt": "10.14.1"}))
    # Extra keys (memory, driver) do not make an engine incompatible.
    assert engine_mismatch(IDENTITY, {**IDENTITY, "driver": "580.1"}) is None


def test_device_spellings() -> None:
    assert cuda_index(0) == 0 and cuda_index(3) == 3
    assert cuda_index("cuda") == 0 and cuda_index("cuda:2") == 2
    for bad in ("cpu", "cuda:x", -1, "gpu"):
        with pytest.raises(ConfigError, match="CUDA GPU"):
            cuda_index(bad)  # type: ignore[arg-type]


def test_backend_validates_its_options_before_looking_for_tensorrt() -> None:
    with pytest.raises(ConfigError, match="unknown precision 'int4'"):
        get_backend("tensorrt", precision="int4")
    with pytest.raises(ConfigError, match="not 'cpu'"):
        get_backend("tensorrt", device="cpu")
    with pytest.raises(ConfigError, match="workspace"):
        get_backend("tensorrt", workspace_mib=0)
    with pytest.raises(ConfigError, match="does not take"):
        get_backend("tensorrt", threads=2)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_without_tensorrt_the_backend_names_the_install() -> None:
    with pytest.raises(ConfigError) as err:
        get_backend("tensorrt")
    message = str(err.value)
    assert "TensorRT is not installed" in message and "pip install 'autoprune[tensorrt]'" in message
    assert "--backend onnxruntime|torch" in message and "\n" not in message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            'raise OSError("libnvinfer.so.10: cannot open shared object file")',
            "installed but does not import",
        ),
        ('__version__ = "8.6.1"', r"TensorRT 8\.6\.1 is too old"),
    ],
)
def test_a_broken_or_old_tensorrt_is_not_reported_as_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, message: str
) -> None:
    """What tests/hardware.py fails on instead of skipping (a wheel that is there but unusable)."""
    from autoprune.latency.trt_engine import require_tensorrt

    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.py").write_text(body + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    with pytest.raises(ConfigError, match=message) as err:
        require_tensorrt()
    assert "\n" not in str(err.value) and "not installed" not in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_without_cuda_the_error_names_the_fix() -> None:
    with pytest.raises(ConfigError, match="no CUDA device"):
        require_cuda(0)


def test_int8_is_refused_where_tensorrt_has_no_calibrator() -> None:
    """TensorRT 11 removed BuilderFlag.INT8 and the calibrators: the check reads the module's API."""
    trt11 = types.SimpleNamespace(__version__="11.1.0", BuilderFlag=types.SimpleNamespace(TF32=1))
    with pytest.raises(ConfigError, match="ModelOpt"):
        check_precision_supported(trt11, "int8")
    check_precision_supported(trt11, "fp16")  # strongly typed fp16 needs no flag
    trt10 = types.SimpleNamespace(
        __version__="10.13.0", BuilderFlag=types.SimpleNamespace(INT8=2), IInt8EntropyCalibrator2=object
    )
    check_precision_supported(trt10, "int8")


def test_fp16_graph_computes_in_half_with_fp32_io() -> None:
    model = create_model("resnet20").eval()
    graph = onnx.load_from_string(engine_onnx(model, (1, 3, 32, 32), "fp16"))
    (inp,), (out,) = graph.graph.input, graph.graph.output
    assert (inp.name, out.name) == ("input", "logits")
    assert inp.type.tensor_type.elem_type == out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert inp.type.tensor_type.shape.dim[0].dim_param  # dynamic batch axis
    assert {i.data_type for i in graph.graph.initializer} == {onnx.TensorProto.FLOAT16}
    assert sum(n.op_type == "Cast" for n in graph.graph.node) == 2
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is untouched
    # The half graph still computes the model: onnxruntime runs it against torch in fp32.
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    (got,) = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.numpy()}
    )
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(got - expected).max() <= 1e-3 + 5e-2 * np.abs(expected).max()


def test_fp32_graph_has_no_half_tensors() -> None:
    graph = onnx.load_from_string(engine_onnx(create_model("resnet20").eval(), (1, 3, 32, 32), "fp32"))
    assert onnx.TensorProto.FLOAT16 not in {i.data_type for i in graph.graph.initializer}
    assert not any(n.op_type == "Cast" for n in graph.graph.node)


class _BuilderConfig:
    """The two IBuilderConfig calls a timing cache needs; ``accept`` is what set_timing_cache returns."""

    def __init__(self, accept: bool, create: bool = True) -> None:
        self.accept, self.create = accept, create
        self.blobs: list[bytes] = []

    def create_timing_cache(self, blob: bytes) -> object | None:
        self.blobs.append(blob)
        return object() if self.create else None

    def set_timing_cache(self, cache: object, ignore_mismatch: bool) -> bool:
        assert ignore_mismatch is False  # a cache from another GPU or version must be reported, not used
        return self.accept


def test_timing_cache_tensorrt_refuses_is_an_error_naming_the_file(tmp_path: Path) -> None:
    from autoprune.latency.trt_engine._build import use_timing_cache

    path = tmp_path / "layers.cache"
    cfg = _BuilderConfig(accept=True)
    assert use_timing_cache(cfg, path) is not None and cfg.blobs == [b""]  # absent: a new cache
    path.write_bytes(b"cache from elsewhere")
    for cfg in (_BuilderConfig(accept=False), _BuilderConfig(accept=True, create=False)):
        with pytest.raises(ConfigError, match="cannot use the timing cache") as err:
            use_timing_cache(cfg, path)
        assert str(path) in str(err.value) and "delete it" in str(err.value) and "\n" not in str(err.value)


def test_tensorrt_backend_times_with_a_cuda_graph_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from autoprune.latency.backends import tensorrt as backend_module

    fake_trt = types.SimpleNamespace(__version__="10.13.0")
    monkeypatch.setattr(backend_module, "require_tensorrt", lambda: fake_trt)
    monkeypatch.setattr(backend_module, "require_cuda", lambda device: None)
    monkeypatch.setattr(backend_module, "check_precision_supported", lambda trt, precision: None)
    settings = get_backend("tensorrt").settings()
    assert settings["cuda_graph"] is True and settings["transfers"] is False
    assert get_backend("tensorrt", **settings).settings() == settings
    assert get_backend("tensorrt", cuda_graph=False).settings()["cuda_graph"] is False


# --- Real TensorRT -------------------------------------------------------------------------------------


@pytest.mark.tensorrt
class TestTensorRTFP32(BackendContract):
    name = "tensorrt"
    options: ClassVar[dict[str, Any]] = {"precision": "fp32"}
    gpu_events = True


@pytest.mark.tensorrt
class TestTensorRTNoGraph(BackendContract):
    name = "tensorrt"
    options: ClassVar[dict[str, Any]] = {"cuda_graph": False}
    gpu_events = True


@pytest.mark.tensorrt
class TestTensorRTFP16(BackendContract):
    name = "tensorrt"
    options: ClassVar[dict[str, Any]] = {"precision": "fp16"}
    gpu_events = True


@pytest.mark.tensorrt
def test_fingerprint_keeps_the_tensorrt_version_in_the_device_identity() -> None:
    import tensorrt

    fp = get_backend("tensorrt").fingerprint()
    assert fp["tensorrt"] == tensorrt.__version__ == fp["versions"]["tensorrt"]
    assert device_identity(fp)["tensorrt"] == tensorrt.__version__
    assert fp["accelerator"]["gpu"] == torch.cuda.get_device_name(0)


@pytest.mark.tensorrt
@pytest.mark.parametrize(
    "options", [{"cuda_graph": False}, {"transfers": True}, {"transfers": True, "cuda_graph": False}]
)
def test_graph_and_transfer_sessions_time_each_iteration(options: dict[str, Any]) -> None:
    with get_backend("tensorrt", **options).session(create_model("resnet20").eval(), (2, 3, 32, 32)) as s:
        times = s.time(9)
    assert times.shape == (9,) and np.all(times > 0) and np.all(np.isfinite(times))


@pytest.mark.tensorrt
def test_runner_matches_torch_anywhere_in_the_batch_range() -> None:
    from autoprune.latency.trt_engine import EngineRunner, build_engine

    model = create_model("resnet20").eval()
    config = EngineConfig(min_batch=1, opt_batch=2, max_batch=4, tf32=False)
    engine = build_engine(model, (2, 3, 32, 32), config)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with EngineRunner(engine, 3) as runner:
        assert runner.batch_range == (1, 2, 4) and runner.shapes["logits"] == [3, 10]
        got = runner.run(x.cuda())["logits"].cpu()
    with torch.no_grad():
        expected = model(x)
    assert (got - expected).abs().max() <= 1e-4 + 1e-3 * expected.abs().max()
    with pytest.raises(ConfigError, match="outside the engine's range"):
        EngineRunner(engine, 5)


@pytest.mark.tensorrt
def test_session_close_returns_gpu_memory() -> None:
    backend = get_backend("tensorrt")
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    session = backend.session(create_model("resnet20").eval(), (8, 3, 32, 32))
    session.time(3)
    assert torch.cuda.memory_allocated() > before  # the I/O tensors
    session.close()
    assert torch.cuda.memory_allocated() == before


@pytest.mark.tensorrt
def test_int8_times_on_tensorrt_10_and_is_refused_on_11() -> None:
    import tensorrt

    from autoprune.latency.trt_engine import supports_int8

    if not supports_int8(tensorrt):
        with pytest.raises(ConfigError, match="ModelOpt"):
            get_backend("tensorrt", precision="int8")
        return
    with get_backend("tensorrt", precision="int8").session(
        create_model("resnet20").eval(), (1, 3, 32, 32)
    ) as s:
        times = s.time(5)
    assert np.all(times > 0)


@pytest.mark.tensorrt
@pytest.mark.parametrize("when", ["before", "after"])
def test_runner_times_without_a_graph_when_the_captured_enqueue_fails(
    monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """As trtexec: an engine whose enqueue fails under capture (before or after TensorRT enqueued its
    kernels into it) is timed with plain launches; the runner says so and keeps the reason."""
    from autoprune.errors import ExportError
    from autoprune.latency.trt_engine import EngineRunner, build_engine

    engine = build_engine(create_model("resnet20").eval(), (1, 3, 32, 32), EngineConfig())
    real = EngineRunner._execute

    def execute(self: EngineRunner) -> None:
        capturing = torch.cuda.is_current_stream_capturing()
        if capturing and when == "before":
            raise RuntimeError("not permitted under capture")
        real(self)
        if capturing:  # what a False from execute_async_v3 becomes
            raise ExportError("TensorRT failed to enqueue the engine")

    monkeypatch.setattr(EngineRunner, "_execute", execute)
    with EngineRunner(engine, 1, cuda_graph=True) as runner:
        assert runner.cuda_graph_used is False and runner.graph_error
        times = runner.time(5)
        assert np.all(times > 0) and isinstance(runner.enqueue_bound, bool)


@pytest.mark.tensorrt
@pytest.mark.parametrize("open_in_inference_mode", [True, False])
def test_runner_runs_in_one_autograd_mode(open_in_inference_mode: bool) -> None:
    """Made inside or outside the caller's inference mode, a runner captures, replays and copies without
    "Inplace update to inference tensor outside InferenceMode"."""
    from autoprune.latency.trt_engine import EngineRunner, build_engine

    engine = build_engine(
        create_model("resnet20").eval(), (2, 3, 32, 32), EngineConfig(opt_batch=2, max_batch=2)
    )
    context = torch.inference_mode() if open_in_inference_mode else contextlib.nullcontext()
    with context:
        runner = EngineRunner(engine, 2, transfers=True, cuda_graph=True)
    with runner:
        assert runner.cuda_graph_used
        times = runner.time(3)
        out = runner.run(torch.randn(2, 3, 32, 32, device="cuda"))["logits"]
        out.add_(1)  # the caller's outputs are ordinary tensors
    assert np.all(times > 0)
