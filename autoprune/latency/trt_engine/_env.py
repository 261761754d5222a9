"""Whether TensorRT and a CUDA GPU are here, which engines may run here (identity), and the one
process-wide TensorRT logger. Nothing here imports TensorRT until called."""

from __future__ import annotations

import importlib.util
import logging
import threading
from typing import Any

import torch

from autoprune.errors import ConfigError
from autoprune.latency.fingerprint import gpu_fingerprint

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "pip install 'autoprune[tensorrt]' on a machine with an NVIDIA GPU (or use --backend onnxruntime|torch)"
)


def require_tensorrt() -> Any:
    """Import and return the ``tensorrt`` module, or raise a one-line ConfigError naming the install."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as exc:  # OSError: the wheel is there but libnvinfer cannot load
        if importlib.util.find_spec("tensorrt") is None:
            raise ConfigError(f"TensorRT is not installed: {INSTALL_HINT}") from exc
        reason = str(exc).replace("\n", " ")
        raise ConfigError(
            f"TensorRT is installed but does not import ({type(exc).__name__}: {reason}): reinstall it with "
            "the CUDA libraries it needs, pip install 'autoprune[tensorrt]' on a machine with an NVIDIA GPU"
        ) from exc
    if trt_major(trt.__version__) < 10:
        raise ConfigError(
            f"TensorRT {trt.__version__} is too old: autoprune needs 10 or newer ({INSTALL_HINT})"
        )
    return trt


def tensorrt_available() -> bool:
    """Whether TensorRT imports and torch sees a CUDA GPU: what a tensorrt-marked test needs."""
    if not torch.cuda.is_available():
        return False
    try:
        require_tensorrt()
    except ConfigError:
        return False
    return True


def trt_major(version: str) -> int:
    return int(version.split(".")[0])


def cuda_index(device: int | str) -> int:
    """The CUDA device index of ``0``, ``"0"``, ``"cuda"`` or ``"cuda:N"``."""
    if isinstance(device, int) and not isinstance(device, bool) and device >= 0:
        return device
    if isinstance(device, str) and device.isdigit():
        return int(device)
    kind, _, index = str(device).partition(":")
    if kind == "cuda" and (index == "" or index.isdigit()):
        return int(index or 0)
    raise ConfigError(f"TensorRT runs on a CUDA GPU, not '{device}': pass --device cuda or cuda:N")


def require_cuda(device: int = 0) -> None:
    """Raise a one-line ConfigError unless torch sees CUDA device ``device``."""
    if not torch.cuda.is_available():
        raise ConfigError(
            "TensorRT needs an NVIDIA GPU but torch sees no CUDA device here: run on the target GPU "
            "(with a CUDA build of torch), or use --backend onnxruntime|torch"
        )
    if device >= torch.cuda.device_count():
        raise ConfigError(
            f"there is no CUDA device {device} (found {torch.cuda.device_count()}): pass --device cuda:N"
        )


def supports_int8(trt: Any) -> bool:
    """Implicit int8 calibration exists in TensorRT 10 and was removed in 11."""
    return hasattr(trt.BuilderFlag, "INT8") and hasattr(trt, "IInt8EntropyCalibrator2")


def check_precision_supported(trt: Any, precision: str) -> None:
    if precision == "int8" and not supports_int8(trt):
        raise ConfigError(
            f"int8 needs TensorRT 10's calibrator, which TensorRT {trt.__version__} removed: quantize the "
            "model to a Q/DQ ONNX with NVIDIA ModelOpt (explicit quantization), or use --precision fp16"
        )


def trt_fingerprint(device: int = 0) -> dict[str, Any]:
    """An engine's identity: it runs (and its latency holds) only on this GPU model with this exact
    TensorRT version. Needs TensorRT and CUDA."""
    trt = require_tensorrt()
    require_cuda(device)
    gpu = gpu_fingerprint(device)
    return {"gpu": gpu["gpu"], "compute_capability": gpu["compute_capability"], "tensorrt": trt.__version__}


IDENTITY_KEYS = ("gpu", "compute_capability", "tensorrt")


def engine_mismatch(built: dict[str, Any], here: dict[str, Any]) -> str | None:
    """What differs between the identity an engine was built with and this machine's (both as
    :func:`trt_fingerprint` returns them), or None when the engine may run here. Pure: no TensorRT."""
    diffs = [
        f"{key} {built.get(key)!r} != {here.get(key)!r}"
        for key in IDENTITY_KEYS
        if built.get(key) != here.get(key)
    ]
    return "; ".join(diffs) or None


class TrtLogger:
    """One process-wide TensorRT logger (TensorRT treats the logger as a singleton) that keeps the last
    error messages, so a failed parse or build can say why on one line."""

    _instance: Any = None
    _lock = threading.Lock()

    @classmethod
    def get(cls) -> Any:
        with cls._lock:
            if cls._instance is None:
                trt = require_tensorrt()

                class Logger(trt.ILogger):  # type: ignore[name-defined]
                    def __init__(self) -> None:
                        trt.ILogger.__init__(self)  # required by the bindings (see trt.ILogger's docs)
                        self.errors: list[str] = []

                    def log(self, severity: Any, msg: str) -> None:
                        if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                            self.errors = [*self.errors[-9:], msg]
                            log.error("TensorRT: %s", msg)
                        elif severity == trt.ILogger.Severity.WARNING:
                            log.warning("TensorRT: %s", msg)

                cls._instance = Logger()
            return cls._instance


def last_error(logger: Any) -> str:
    return logger.errors[-1].replace("\n", " ") if logger.errors else "no error logged"
