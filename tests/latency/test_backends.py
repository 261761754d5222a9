"""Each latency backend against its contract (`contracts/backend.py`), and the registry's errors."""

from __future__ import annotations

import types
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from contracts import covered
from contracts.backend import BackendContract

from autoprune.errors import ConfigError
from autoprune.latency import get_backend, list_backends
from autoprune.models import create_model


class TestOnnxRuntime(BackendContract):
    name = "onnxruntime"
    options: ClassVar[dict[str, Any]] = {"threads": 1}


class TestTorchCPU(BackendContract):
    name = "torch"
    options: ClassVar[dict[str, Any]] = {"threads": 1}


def _cuda() -> bool:
    return torch.cuda.is_available()


def _ort_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.mark.gpu
class TestTorchCUDA(BackendContract):
    name = "torch"
    options: ClassVar[dict[str, Any]] = {"device": "cuda"}
    gpu_events = True


@pytest.mark.gpu
class TestTorchCUDANoGraph(BackendContract):
    name = "torch"
    options: ClassVar[dict[str, Any]] = {"device": "cuda", "cuda_graph": False}
    gpu_events = True


@pytest.mark.gpu
class TestTorchCUDAGraphFP16(BackendContract):
    name = "torch"
    options: ClassVar[dict[str, Any]] = {"device": "cuda", "precision": "fp16", "cuda_graph": True}
    gpu_events = True


@pytest.mark.gpu
class TestTorchCUDATransfers(BackendContract):
    name = "torch"
    options: ClassVar[dict[str, Any]] = {"device": "cuda", "transfers": True}
    gpu_events = True


@pytest.mark.gpu
@pytest.mark.skipif(not (_cuda() and _ort_cuda()), reason="no onnxruntime CUDA provider with a GPU here")
class TestOnnxRuntimeCUDA(BackendContract):
    name = "onnxruntime"
    options: ClassVar[dict[str, Any]] = {"device": "cuda"}


def test_gpu_options_fail_fast_with_the_fix_named() -> None:
    if not _cuda():
        with pytest.raises(ConfigError, match=r"no CUDA GPU here.*--device cpu"):
            get_backend("torch", device="cuda")
    if not _ort_cuda():
        with pytest.raises(ConfigError, match="onnxruntime-gpu"):
            get_backend("onnxruntime", device="cuda")
    with pytest.raises(ConfigError, match="--device cpu the torch backend measures fp32"):
        get_backend("torch", precision="fp16")
    with pytest.raises(ConfigError, match="fp32 only"):
        get_backend("onnxruntime", precision="fp16")
    with pytest.raises(ConfigError, match="unknown --device 'tpu'"):
        get_backend("torch", device="tpu")
    with pytest.raises(ConfigError, match=r"does not take these options.*cuda_graph"):
        get_backend("onnxruntime", cuda_graph=True)


def test_registry_names_and_errors() -> None:
    assert {"onnxruntime", "torch", "tensorrt"} <= set(list_backends())
    with pytest.raises(ConfigError, match="unknown latency backend 'tensorrtx'"):
        get_backend("tensorrtx")
    with pytest.raises(ConfigError, match="threads"):
        get_backend("onnxruntime", threads=0)


# --- GPU paths checked without a GPU: fakes for what only a GPU (or onnxruntime-gpu) would tell --------


class _FakeOrt:
    """An onnxruntime InferenceSession whose providers are given, recording its I/O binding calls."""

    def __init__(self, providers: list[str]) -> None:
        self.providers = providers
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, model: bytes, options: object, providers: list[object]) -> _FakeOrt:
        return self

    def get_providers(self) -> list[str]:
        return self.providers

    def io_binding(self) -> _FakeOrt:
        return self

    def bind_cpu_input(self, name: str, x: np.ndarray) -> None:
        self.calls.append(("bind_cpu_input", name))

    def bind_output(self, name: str, device: str, index: int = 0) -> None:
        self.calls.append(("bind_output", name, device))

    def bind_ortvalue_input(self, name: str, value: object) -> None:
        self.calls.append(("bind_ortvalue_input", name))

    def run_with_iobinding(self, binding: object) -> None:
        self.calls.append(("run",))


def _ort_with(monkeypatch: pytest.MonkeyPatch, providers: list[str]) -> _FakeOrt:
    import onnxruntime as ort

    fake = _FakeOrt(providers)
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    monkeypatch.setattr(ort, "InferenceSession", fake)
    monkeypatch.setattr(ort, "OrtValue", types.SimpleNamespace(ortvalue_from_numpy=lambda x, *device: x))
    return fake


def _tiny() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()).eval()


def test_onnxruntime_refuses_a_cuda_session_that_fell_back_to_the_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CUDA listed as available but failing to load: the session would time the CPU, labelled GPU."""
    _ort_with(monkeypatch, ["CPUExecutionProvider"])
    backend = get_backend("onnxruntime", device="cuda")
    with pytest.raises(ConfigError, match="could not load its CUDA execution provider") as err:
        backend.session(_tiny(), (1, 3, 8, 8))
    message = str(err.value)
    assert "runs on CPUExecutionProvider" in message and "--backend torch --device cuda" in message
    assert "\n" not in message


def test_onnxruntime_transfers_bind_the_host_input_in_every_timed_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bind_cpu_input copies to the GPU when called: bound once, the timed runs would skip the copy."""
    fake = _ort_with(monkeypatch, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    session = get_backend("onnxruntime", device="cuda", transfers=True).session(_tiny(), (1, 3, 8, 8))
    assert fake.calls == [("bind_output", "logits", "cpu")]
    session.time(3)
    assert fake.calls[1:] == [("bind_cpu_input", "input"), ("run",)] * 3
    fake.calls.clear()
    get_backend("onnxruntime", device="cuda").session(_tiny(), (1, 3, 8, 8)).time(2)
    assert fake.calls == [
        ("bind_ortvalue_input", "input"),
        ("bind_output", "logits", "cuda"),
        ("run",),
        ("run",),
    ]


def test_cuda_graph_is_on_by_default_on_cuda_and_not_applicable_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cpu = get_backend("torch")
    assert cpu.settings()["cuda_graph"] is False
    assert get_backend("torch", **cpu.settings()).settings() == cpu.settings()
    assert get_backend("torch", cuda_graph=None).settings()["cuda_graph"] is False
    with pytest.raises(ConfigError, match="without CUDA graphs"):
        get_backend("torch", cuda_graph=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the constructor only asks this
    assert get_backend("torch", device="cuda").settings()["cuda_graph"] is True
    assert get_backend("torch", device="cuda", cuda_graph=False).settings()["cuda_graph"] is False


def test_cudnn_benchmark_is_restored_when_the_last_session_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Overlapping sessions: closing the first must not turn autotuning off under the second."""
    from autoprune.latency.backends.torch import _CudnnBenchmark

    for before in (False, True):
        monkeypatch.setattr(torch.backends.cudnn, "benchmark", before)
        flag = _CudnnBenchmark()
        flag.acquire()  # session A opens
        flag.acquire()  # session B opens
        flag.release()  # A closes first
        assert torch.backends.cudnn.benchmark is True
        flag.release()  # B closes
        assert torch.backends.cudnn.benchmark is before


# --- Real GPU ------------------------------------------------------------------------------------------


class _Uncapturable(torch.nn.Module):
    """Reads a value back to the host in its forward: not permitted under CUDA graph capture."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y * float(y.abs().max().item() > 0)


@pytest.mark.gpu
def test_torch_cuda_times_without_a_graph_where_capture_fails() -> None:
    with get_backend("torch", device="cuda").session(_Uncapturable().eval(), (1, 3, 16, 16)) as session:
        times = session.time(5)
        info = session.info()
    assert info["cuda_graph"] is False and isinstance(info["enqueue_bound"], bool)
    assert np.all(times > 0) and np.all(np.isfinite(times))


@pytest.mark.gpu
def test_torch_cuda_sessions_restore_cudnn_benchmark_in_any_close_order() -> None:
    torch.backends.cudnn.benchmark = False
    backend = get_backend("torch", device="cuda")
    first = backend.session(create_model("resnet20").eval(), (1, 3, 32, 32))
    second = backend.session(create_model("resnet20").eval(), (1, 3, 32, 32))
    first.close()
    assert torch.backends.cudnn.benchmark is True
    second.time(3)
    second.close()
    assert torch.backends.cudnn.benchmark is False


@pytest.mark.gpu
@pytest.mark.parametrize("open_in_inference_mode", [True, False])
def test_torch_cuda_sessions_run_in_one_autograd_mode(open_in_inference_mode: bool) -> None:
    """Opened inside or outside the caller's inference mode, a session captures, replays and copies
    without "Inplace update to inference tensor outside InferenceMode"."""
    backend = get_backend("torch", device="cuda", transfers=True)
    if open_in_inference_mode:
        with torch.inference_mode():
            session = backend.session(create_model("resnet20").eval(), (2, 3, 32, 32))
        times = session.time(3)
    else:
        session = backend.session(create_model("resnet20").eval(), (2, 3, 32, 32))
        with torch.inference_mode():
            times = session.time(3)
    session.close()
    assert np.all(times > 0)


def test_every_registered_backend_has_a_contract_class() -> None:
    import test_tensorrt  # noqa: F401  (its subclasses count)

    from autoprune.latency.backends import BACKENDS

    # The suite's own doubles (tests/doubles.py) stay registered while a session fixture needs them
    # (the api tests' "counting" profile): they are not plug-ins of the product.
    product = {n for n in list_backends() if not BACKENDS._targets.get(n, "").startswith("doubles:")}
    assert {"onnxruntime", "torch", "tensorrt"} <= product <= covered(BackendContract, "name")
