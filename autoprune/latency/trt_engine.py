"""TensorRT engines: the one place their build settings live, shared by the tensorrt latency backend and
``autoprune export --format tensorrt``, so a profile and an exported engine are built the same way.

The steps follow NVIDIA's Python samples (``samples/python/common_runtime.py``, ``efficientnet`` and
``detectron2`` ``build_engine.py``) on the TensorRT 10 name-based API, which TensorRT 11 keeps:
torch -> ONNX (:func:`autoprune.latency._onnx.to_onnx`, dynamic batch) -> ``trt.OnnxParser`` ->
``Builder.build_serialized_network`` with one optimisation profile -> ``Runtime.deserialize_cuda_engine``
-> ``IExecutionContext`` with ``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``.
I/O buffers are torch CUDA tensors and the stream is a ``torch.cuda.Stream``: pycuda and cuda-python are
not needed.

Precision, TensorRT 10 vs 11 (11 removed weak typing: ``BuilderFlag.FP16/INT8``,
``IBuilderConfig.int8_calibrator``, ``platform_has_fast_fp16``; every network is strongly typed):

- ``fp32``: the plain ONNX graph in a strongly typed network (10: ``STRONGLY_TYPED`` creation flag; 11:
  always). Convolutions may use TF32 tensor cores unless ``tf32=False`` (trtexec ``--noTF32``).
- ``fp16``: the model is exported wrapped so that its weights and compute are fp16 while the engine's
  input and output stay fp32 (casts at both ends, as ModelOpt AutoCast ``keep_io_types``), and built
  strongly typed: the same engine on 10 and 11, with no deprecated builder flag.
- ``int8``: TensorRT 10 implicit quantization (weakly typed network, ``BuilderFlag.INT8`` + ``FP16`` as
  NVIDIA's detectron2 sample and trtexec ``--int8 --fp16``) with an ``IInt8EntropyCalibrator2`` fed torch
  CUDA tensors, and an optional calibration cache. Without calibration data the calibrator is fed seeded
  random inputs: right for *latency* (like trtexec ``--int8`` without ``--calib``, the scales do not change
  which kernels run), wrong for accuracy. TensorRT 11 has no calibrator API: int8 there needs a Q/DQ ONNX
  from NVIDIA ModelOpt, which autoprune does not produce, so it is refused with that fix.
"""

from __future__ import annotations

import copy
import itertools
import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from autoprune.config import _Config
from autoprune.errors import ConfigError, ExportError
from autoprune.latency._onnx import to_onnx
from autoprune.latency.fingerprint import gpu_fingerprint

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
CALIBRATION_BATCHES = 8  # random batches when int8 gets no calibration data (profiling only)
INSTALL_HINT = (
    "pip install 'autoprune[tensorrt]' on a machine with an NVIDIA GPU (or use --backend onnxruntime|torch)"
)


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


# --- TensorRT and CUDA presence ------------------------------------------------------------------------


def require_tensorrt() -> Any:
    """Import and return the ``tensorrt`` module, or raise a one-line ConfigError naming the install."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as exc:  # OSError: the wheel is there but libnvinfer cannot load
        raise ConfigError(f"TensorRT is not installed: {INSTALL_HINT}") from exc
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


# --- Build --------------------------------------------------------------------------------------------


class _Logger:
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


def _last_error(logger: Any) -> str:
    return logger.errors[-1].replace("\n", " ") if logger.errors else "no error logged"


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
    logger = _Logger.get()
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
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_bytes):
            errors = "; ".join(str(parser.get_error(i)).replace("\n", " ") for i in range(parser.num_errors))
            raise ExportError(
                f"TensorRT's ONNX parser rejected the model ({errors or _last_error(logger)}): the model "
                "uses an op TensorRT does not support; report it with the model spec"
            )
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
            cfg.set_flag(trt.BuilderFlag.FP16)  # layers without an int8 kernel run in fp16, not fp32
            cfg.set_flag(trt.BuilderFlag.INT8)
            calibrator = _calibrator(trt, data, config.calibration_cache)  # referenced until the build ends
            cfg.int8_calibrator = calibrator
            # The calibration batches' shape (TensorRT 10: needed with a dynamic batch axis).
            calib_profile = builder.create_optimization_profile()
            calib_profile.set_shape(name, data.shape, data.shape, data.shape)
            cfg.set_calibration_profile(calib_profile)
        timing_cache = Path(config.timing_cache) if config.timing_cache else None
        if timing_cache is not None:
            blob = timing_cache.read_bytes() if timing_cache.is_file() else b""
            cfg.set_timing_cache(cfg.create_timing_cache(blob), False)
        serialized = builder.build_serialized_network(network, cfg)
        del calibrator
        if data is not None and data.error:
            raise ConfigError(f"{data.error}: give every int8 calibration batch the same shape")
        if serialized is None:
            raise ExportError(
                f"TensorRT could not build the engine ({_last_error(logger)}): try a larger --workspace-mib, "
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


# --- Run ----------------------------------------------------------------------------------------------


def torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    """The torch dtype of a TensorRT ``DataType`` (names differ across versions: looked up lazily)."""
    table = {
        getattr(trt, name): value
        for name, value in [
            ("float32", torch.float32),
            ("float16", torch.float16),
            ("bfloat16", torch.bfloat16),
            ("int8", torch.int8),
            ("uint8", torch.uint8),
            ("int32", torch.int32),
            ("int64", torch.int64),
            ("bool", torch.bool),
        ]
        if hasattr(trt, name)
    }
    if dtype not in table:
        raise ExportError(f"engine tensor type {dtype} has no torch equivalent: rebuild with fp32 I/O")
    return table[dtype]


class EngineRunner:
    """A deserialised engine with its execution context and torch CUDA I/O tensors for one batch size.

    ``run(x)`` infers on a given input (parity checks); ``time(n)`` times ``n`` back-to-back inferences on
    a fixed random input, each between two CUDA events recorded on the runner's stream (trtexec's "GPU
    Compute Time"). ``transfers`` adds the pinned host->device input copy and device->host output copy to
    every timed iteration (trtexec's default before 11; 11's default and ``--noDataTransfers`` leave them
    out). ``cuda_graph`` captures one ``execute_async_v3`` (after one warm-up enqueue, as trtexec
    ``--useCudaGraph`` and Torch-TensorRT do) with ``torch.cuda.graph`` and replays it in ``time``.
    Call ``close()`` to free the GPU memory.
    """

    def __init__(
        self,
        engine: bytes,
        batch: int | None = None,
        *,
        device: int = 0,
        transfers: bool = False,
        cuda_graph: bool = False,
    ) -> None:
        trt = require_tensorrt()
        require_cuda(device)
        self._trt, self.transfers = trt, transfers
        self.device = torch.device("cuda", device)
        with torch.cuda.device(device):
            self._runtime = trt.Runtime(_Logger.get())
            self._engine = self._runtime.deserialize_cuda_engine(engine)
            if self._engine is None:
                raise ExportError(
                    f"TensorRT {trt.__version__} cannot load this engine ({_last_error(_Logger.get())}): "
                    "rebuild it on this machine with autoprune export --format tensorrt"
                )
            self._context = self._engine.create_execution_context()
            names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
            is_input = [self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names]
            self.input_names = [n for n, i in zip(names, is_input, strict=True) if i]
            self.output_names = [n for n, i in zip(names, is_input, strict=True) if not i]
            self.batch_range = self._batch_range(self.input_names[0])
            self.batch = self.batch_range[1] if batch is None else batch
            if not self.batch_range[0] <= self.batch <= self.batch_range[2]:
                raise ConfigError(
                    f"batch {self.batch} is outside the engine's range {list(self.batch_range)}: "
                    "rebuild the engine with that batch in its range"
                )
            self.buffers: dict[str, Tensor] = {}
            gen = torch.Generator().manual_seed(0)
            for name in self.input_names:
                shape = (self.batch, *tuple(self._engine.get_tensor_shape(name))[1:])
                if not self._context.set_input_shape(name, shape):
                    raise ExportError(f"the engine rejects input shape {list(shape)} for '{name}'")
                dtype = torch_dtype(trt, self._engine.get_tensor_dtype(name))
                self.buffers[name] = torch.randn(shape, generator=gen).to(self.device, dtype)
            for name in self.output_names:
                shape = tuple(self._context.get_tensor_shape(name))
                dtype = torch_dtype(trt, self._engine.get_tensor_dtype(name))
                self.buffers[name] = torch.empty(shape, dtype=dtype, device=self.device)
            for name, tensor in self.buffers.items():
                self._context.set_tensor_address(name, tensor.data_ptr())
            self._host: dict[str, Tensor] = {}
            if transfers:  # pinned host copies, so the timed copies are true async DMA transfers
                self._host = {
                    n: torch.empty_like(t, device="cpu").pin_memory() for n, t in self.buffers.items()
                }
                for name in self.input_names:
                    self._host[name].copy_(self.buffers[name])
            self._stream = torch.cuda.Stream(self.device)
            self._graph: torch.cuda.CUDAGraph | None = None
            if cuda_graph:
                self._enqueue()  # warm-up enqueue: lets TensorRT finish shape-dependent setup first
                self._stream.synchronize()
                self._graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self._graph, stream=self._stream):
                    self._enqueue()
            self._stream.synchronize()

    def _batch_range(self, name: str) -> tuple[int, int, int]:
        lo, opt, hi = self._engine.get_tensor_profile_shape(name, 0)
        return int(lo[0]), int(opt[0]), int(hi[0])

    @property
    def shapes(self) -> dict[str, list[int]]:
        """Every I/O tensor's shape at this runner's batch."""
        return {name: list(t.shape) for name, t in self.buffers.items()}

    def io_spec(self) -> dict[str, list[dict[str, Any]]]:
        """Names, dtypes and shapes (batch axis -1 when dynamic) of the engine's inputs and outputs."""

        def spec(name: str) -> dict[str, Any]:
            return {
                "name": name,
                "dtype": str(self.buffers[name].dtype).removeprefix("torch."),
                "shape": [int(d) for d in self._engine.get_tensor_shape(name)],
            }

        return {
            "inputs": [spec(n) for n in self.input_names],
            "outputs": [spec(n) for n in self.output_names],
        }

    def _execute(self) -> None:
        if not self._context.execute_async_v3(self._stream.cuda_stream):
            raise ExportError("TensorRT failed to enqueue the engine: rebuild it on this machine")

    def _enqueue(self) -> None:
        if self.transfers:
            for name in self.input_names:
                self.buffers[name].copy_(self._host[name], non_blocking=True)
        self._execute()
        if self.transfers:
            for name in self.output_names:
                self._host[name].copy_(self.buffers[name], non_blocking=True)

    def run(self, x: Tensor) -> dict[str, Tensor]:
        """Infer on ``x`` (the single input, this runner's batch); the outputs, cloned, on the GPU."""
        name = self.input_names[0]
        if tuple(x.shape) != tuple(self.buffers[name].shape):
            raise ConfigError(f"input shape {list(x.shape)} != the runner's {list(self.buffers[name].shape)}")
        self._stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._stream):
            self.buffers[name].copy_(x)
            self._execute()
            outputs = {n: self.buffers[n].clone() for n in self.output_names}
        self._stream.synchronize()
        return outputs

    def time(self, iterations: int) -> np.ndarray:
        """Milliseconds of each of ``iterations`` back-to-back inferences (CUDA events, one sync)."""
        events = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            for _ in range(iterations)
        ]
        with torch.cuda.stream(self._stream):
            for start, end in events:
                start.record(self._stream)
                if self._graph is not None:
                    self._graph.replay()
                else:
                    self._enqueue()
                end.record(self._stream)
        self._stream.synchronize()
        return np.array([start.elapsed_time(end) for start, end in events])

    def close(self) -> None:
        """Free the context's and the I/O tensors' GPU memory (context before engine before runtime)."""
        if getattr(self, "_context", None) is None:
            return
        self._stream.synchronize()
        self._graph = None
        self._context = None
        self._engine = None
        self._runtime = None
        self.buffers, self._host = {}, {}
        torch.cuda.empty_cache()

    def __enter__(self) -> EngineRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
