"""Measuring sub-networks on a device: backends, the timing protocol, sampling and profiles."""

from __future__ import annotations

from autoprune.latency._onnx import to_onnx
from autoprune.latency.backends import LatencyBackend, Session, get_backend, list_backends, register_backend
from autoprune.latency.compat import check_same_run, difference, mismatch
from autoprune.latency.fingerprint import device_identity
from autoprune.latency.interleaved import (
    Timing,
    time_interleaved,
    time_widths,
)
from autoprune.latency.lut import LatencyTable, lut_path, profile_lut, read_lut
from autoprune.latency.merge import merge_profiles
from autoprune.latency.profile import (
    Profile,
    default_profile_path,
    device_slug,
    profile_model,
    read_profile,
    sidecar_path,
)
from autoprune.latency.protocol import LatencyStats, measure, noisy_rounds
from autoprune.latency.sampler import boundary_plan, plan_samples
from autoprune.latency.shard import Shard
from autoprune.latency.trt_engine import EngineConfig, cuda_index

__all__ = [
    "EngineConfig",
    "LatencyBackend",
    "LatencyStats",
    "LatencyTable",
    "Profile",
    "Session",
    "Shard",
    "Timing",
    "boundary_plan",
    "check_same_run",
    "cuda_index",
    "default_profile_path",
    "device_identity",
    "device_slug",
    "difference",
    "get_backend",
    "list_backends",
    "lut_path",
    "measure",
    "merge_profiles",
    "mismatch",
    "noisy_rounds",
    "plan_samples",
    "profile_lut",
    "profile_model",
    "read_lut",
    "read_profile",
    "register_backend",
    "sidecar_path",
    "time_interleaved",
    "time_widths",
    "to_onnx",
]
