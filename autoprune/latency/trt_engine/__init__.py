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

from autoprune.latency.trt_engine._build import (
    CALIBRATION_BATCHES,
    PRECISIONS,
    EngineConfig,
    build_engine,
    build_onnx_engine,
    engine_onnx,
)
from autoprune.latency.trt_engine._env import (
    IDENTITY_KEYS,
    INSTALL_HINT,
    check_precision_supported,
    cuda_index,
    engine_mismatch,
    require_cuda,
    require_tensorrt,
    supports_int8,
    tensorrt_available,
    trt_fingerprint,
    trt_major,
)
from autoprune.latency.trt_engine._run import EngineRunner, EngineSession, torch_dtype

__all__ = [
    "CALIBRATION_BATCHES",
    "IDENTITY_KEYS",
    "INSTALL_HINT",
    "PRECISIONS",
    "EngineConfig",
    "EngineRunner",
    "EngineSession",
    "build_engine",
    "build_onnx_engine",
    "check_precision_supported",
    "cuda_index",
    "engine_mismatch",
    "engine_onnx",
    "require_cuda",
    "require_tensorrt",
    "supports_int8",
    "tensorrt_available",
    "torch_dtype",
    "trt_fingerprint",
    "trt_major",
]
