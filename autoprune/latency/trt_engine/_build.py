"""Building an engine: its settings (``EngineConfig``), torch -> ONNX (fp16 with fp32 I/O), the int8
calibrator and ``build_serialized_network``."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from autoprune.config import _Config
from autoprune.errors import ConfigError, ExportError
from autoprune.latency._onnx import to_onnx
from autoprune.latency.trt_engine._env import (
    TrtLogger,
    check_precision_supported,
    last_error,
    require_cuda,
    require_tensorrt,
    trt_major,
)

PRECISIONS = ("fp32", "fp16", "int8")
CALIBRATION_BATCHES = 8  # random batches when int8 gets no calibration data (profiling only)


@dataclass(frozen=True)
class EngineConfig(_Config):
    """How an engine is built. ``min/opt/max_batch`` are the optimisation profile of the batch axis
    (kernels are tuned for ``opt_batch``, valid in [min, max]); ``workspace_mib`` caps the builder's
    scratch memory (``MemoryPoolType.WORKSPACE``); ``builder_optimization_level`` 0-5 trades build time
    for engine speed (3 is TensorRT's default); ``tf32`` lets fp32 convolutions use TF32 (TensorRT's
    default); ``timing_cache`` is a file reused and updated across builds (trtexec ``--timingCacheFile``:
    faster rebuilds, same tactics); ``calibration_cache`` (int8 only) is read if present, else written."""

    precision: str = "fp32"
    workspace_mib: int = 1024
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 1
    builder_optimization_level: int = 3
    tf32: bool = True
    timing_cache: str | None = None
    calibration_cache: str | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision '{self.precision}': use one of {', '.join(PRECISIONS)}")
        if self.workspace_mib < 1:
            raise ConfigError(f"--workspace-mib must be >= 1, got {self.workspace_mib}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ConfigError(
                f"batch range must satisfy 1 <= min <= opt <= max, got {self.min_batch}/{self.opt_batch}/"
                f"{self.max_batch}: fix the engine's batch sizes"
            )
        if not 0 <= self.builder_optimization_level <= 5:
            raise ConfigError(
                f"builder_optimization_level must be 0-5 (TensorRT's default 3), "
                f"got {self.builder_optimization_level}"
            )
        if self.calibration_cache is not None and self.precision != "int8":
            raise ConfigError("a calibration cache applies to int8 only: drop it or pass --precision int8")

    @property
    def batch_range(self) -> tuple[int, int, int]:
        return self.min_batch, self.opt_batch, self.max_batch


class _FP16IO(nn.Module):
    """fp16 weights and compute, fp32 input and output: exported, it is the fp32 graph with a Cast at
    each end, which a strongly typed TensorRT network builds in fp16 (like ModelOpt AutoCast
    ``keep_io_types``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.half()

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.half()).float()


def engine_onnx(model: nn.Module, input_shape: Sequence[int], precision: str) -> bytes:
    """The ONNX graph an engine of ``precision`` is built from: input "input" (fp32, dynamic batch),
    output "logits" (fp32). fp16 exports a half copy of ``model``; ``model`` itself is not modified."""
    example = torch.zeros(1, *input_shape[1:])
    if precision != "fp16":
        return to_onnx(model, example, dynamic_batch=True)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    wrapped = _FP16IO(copy.deepcopy(model).eval())
    return to_onnx(wrapped, example.to(device), dynamic_batch=True)


class _Calibration:
    """Batches for the int8 calibrator: the caller's tensors, or seeded random ones. Holds the current
    batch on the GPU until TensorRT asks for the next (TensorRT reads it through the pointer)."""

    def __init__(self, batches: Iterable[Tensor] | None, input_shape: Sequence[int], device: int) -> None:
        if batches is None:
            gen = torch.Generator().manual_seed(0)
            batches = (torch.randn(tuple(input_shape), generator=gen) for _ in range(CALIBRATION_BATCHES))
        it: Iterator[Tensor] = iter(batches)
        try:
            first = next(it)
        except StopIteration:
            raise ConfigError("the int8 calibration data is empty: pass at least one batch") from None
        self.shape = tuple(first.shape)
        if len(self.shape) != len(input_shape) or self.shape[1:] != tuple(input_shape[1:]):
            raise ConfigError(
                f"calibration batches have shape {list(self.shape)} but the model takes "
                f"{list(input_shape)}: pass batches of Bx{'x'.join(map(str, input_shape[1:]))}"
            )
        self._it = itertools.chain([first], it)
        self._device = torch.device("cuda", device)
        self._current: Tensor | None = None
        self.error: str | None = None
        self.count = 0

    def next_pointer(self) -> int | None:
        batch = next(self._it, None)
        if batch is None:
            self._current = None
            return None
        if tuple(batch.shape) != self.shape:  # TensorRT cannot be told; stop and report after the build
            self.error = (
                f"calibration batch {self.count} has shape {list(batch.shape)}, not {list(self.shape)}"
            )
            return None
        self._current = batch.detach().to(self._device, torch.float32).contiguous()
        self.count += 1
        return int(self._current.data_ptr())


def _calibrator(trt: Any, data: _Calibration, cache: str | None) -> Any:
    """An ``IInt8EntropyCalibrator2`` (the calibrator of NVIDIA's efficientnet sample and Polygraphy's
    default). The batch size is 1 by convention: with an explicit batch axis TensorRT takes the batch
    from the calibration profile (``get_batch_size`` is deprecated in 10)."""

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # the bindings need the explicit base __init__

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            pointer = data.next_pointer()
            return None if pointer is None else [pointer]

        def read_calibration_cache(self) -> bytes | None:
            if cache is not None and Path(cache).is_file() and Path(cache).stat().st_size:
                return Path(cache).read_bytes()
            return None

        def write_calibration_cache(self, blob: Any) -> None:
            if cache is not None:
                Path(cache).parent.mkdir(parents=True, exist_ok=True)
                Path(cache).write_bytes(bytes(blob))

    return Calibrator()


def use_timing_cache(cfg: Any, path: Path) -> Any:
    """Load the timing cache ``path`` (a new one when absent) into builder config ``cfg``, as trtexec
    ``--timingCacheFile``; returns the cache, to be kept until the build ends. A cache TensorRT refuses
    (``set_timing_cache`` returns False: written by another TensorRT version or GPU) is a ConfigError."""
    cache = cfg.create_timing_cache(path.read_bytes() if path.is_file() else b"")
    if cache is None or not cfg.set_timing_cache(cache, False):  # False: do not ignore a mismatch
        raise ConfigError(
            f"TensorRT cannot use the timing cache {path} (another TensorRT version or GPU wrote it?): "
            "delete it, or pass another timing_cache file"
        )
    return cache


def _parse(trt: Any, network: Any, onnx_bytes: bytes, logger: Any) -> Any:
    """TensorRT's ONNX parser, having read ``onnx_bytes`` into ``network`` (an ExportError if it refused)."""
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)).replace("\n", " ") for i in range(parser.num_errors))
        raise ExportError(
            f"TensorRT's ONNX parser rejected the model ({errors or last_error(logger)}): the model "
            "uses an op TensorRT does not support; report it with the model spec"
        )
    return parser


def _use_int8(trt: Any, builder: Any, cfg: Any, name: str, data: _Calibration, config: EngineConfig) -> Any:
    """int8 with fp16 fallback on ``cfg``, calibrated on ``data``; returns the calibrator, which must stay
    referenced until the build ends."""
    cfg.set_flag(trt.BuilderFlag.FP16)  # layers without an int8 kernel run in fp16, not fp32
    cfg.set_flag(trt.BuilderFlag.INT8)
    calibrator = _calibrator(trt, data, config.calibration_cache)
    cfg.int8_calibrator = calibrator
    # The calibration batches' shape (TensorRT 10: needed with a dynamic batch axis).
    calib_profile = builder.create_optimization_profile()
    calib_profile.set_shape(name, data.shape, data.shape, data.shape)
    cfg.set_calibration_profile(calib_profile)
    return calibrator


def build_onnx_engine(
    onnx_bytes: bytes,
    input_shape: Sequence[int],
    config: EngineConfig,
    *,
    calibration: Iterable[Tensor] | None = None,
    device: int = 0,
) -> bytes:
    """Parse ``onnx_bytes`` (input "input") and build a serialised engine with ``config``."""
    trt = require_tensorrt()
    require_cuda(device)
    check_precision_supported(trt, config.precision)
    logger = TrtLogger.get()
    logger.errors = []
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    # int8 calibration needs a weakly typed network (TensorRT 10 only); strong typing is the default
    # and the flag a no-op on 11, so it is set on 10 alone.
    flags = 0
    if config.precision != "int8" and strongly_typed is not None and trt_major(trt.__version__) < 11:
        flags = 1 << int(strongly_typed)
    with torch.cuda.device(device):
        builder = trt.Builder(logger)
        network = builder.create_network(flags)
        parser = _parse(trt, network, onnx_bytes, logger)  # owns the weights: held until the build ends
        cfg = builder.create_builder_config()
        cfg.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mib << 20)
        cfg.builder_optimization_level = config.builder_optimization_level
        tf32 = getattr(trt.BuilderFlag, "TF32", None)
        if tf32 is not None and not config.tf32:
            cfg.clear_flag(tf32)
        name = network.get_input(0).name
        chw = tuple(input_shape[1:])
        profile = builder.create_optimization_profile()
        profile.set_shape(name, *[(b, *chw) for b in config.batch_range])
        cfg.add_optimization_profile(profile)
        data = calibrator = None
        if config.precision == "int8":
            data = _Calibration(calibration, (config.opt_batch, *chw), device)
            calibrator = _use_int8(trt, builder, cfg, name, data, config)  # referenced until the build ends
        timing_cache = Path(config.timing_cache) if config.timing_cache else None
        cache = None if timing_cache is None else use_timing_cache(cfg, timing_cache)  # held for the build
        serialized = builder.build_serialized_network(network, cfg)
        del calibrator, cache, parser
        if data is not None and data.error:
            raise ConfigError(f"{data.error}: give every int8 calibration batch the same shape")
        if serialized is None:
            raise ExportError(
                f"TensorRT could not build the engine ({last_error(logger)}): try a larger --workspace-mib, "
                "or report it with the model spec"
            )
        if timing_cache is not None:
            timing_cache.parent.mkdir(parents=True, exist_ok=True)
            timing_cache.write_bytes(bytes(cfg.get_timing_cache().serialize()))
        return bytes(serialized)


def build_engine(
    model: nn.Module,
    input_shape: Sequence[int],
    config: EngineConfig,
    *,
    calibration: Iterable[Tensor] | None = None,
    device: int = 0,
) -> bytes:
    """torch -> ONNX -> serialised TensorRT engine for inputs ``Bx`` ``input_shape[1:]`` with B in
    ``config``'s batch range. ``calibration`` (int8 only): batches of real inputs (any batch size, one
    shape); None calibrates on random inputs (latency only). ``model`` is not modified."""
    if calibration is not None and config.precision != "int8":
        raise ConfigError("calibration data applies to int8 only: drop it or pass --precision int8")
    trt = require_tensorrt()
    check_precision_supported(trt, config.precision)
    return build_onnx_engine(
        engine_onnx(model, input_shape, config.precision),
        input_shape,
        config,
        calibration=calibration,
        device=device,
    )
