"""Measuring sub-networks on a device: backends, the timing protocol, sampling and profiles."""

from __future__ import annotations

from autoprune.latency._onnx import to_onnx
from autoprune.latency.backends import LatencyBackend, Session, get_backend, list_backends, register_backend
from autoprune.latency.compare import measure_interleaved, measure_widths
from autoprune.latency.fingerprint import device_identity
from autoprune.latency.profile import Profile, profile_model, read_profile, sidecar_path
from autoprune.latency.protocol import LatencyStats, measure
from autoprune.latency.sampler import plan_samples

__all__ = [
    "LatencyBackend",
    "LatencyStats",
    "Profile",
    "Session",
    "device_identity",
    "get_backend",
    "list_backends",
    "measure",
    "measure_interleaved",
    "measure_widths",
    "plan_samples",
    "profile_model",
    "read_profile",
    "register_backend",
    "sidecar_path",
    "to_onnx",
]
