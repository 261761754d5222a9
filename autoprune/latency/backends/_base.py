"""The latency backend plugin kind: turn a model into a session that times single inferences."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from torch import nn


class Session(abc.ABC):
    """A model loaded on the device, with its input already in place."""

    @abc.abstractmethod
    def time(self, iterations: int) -> np.ndarray:
        """Run ``iterations`` inferences back to back; return each one's latency in milliseconds."""

    def info(self) -> dict[str, Any]:
        """How the timed runs actually ran, for the measurement record. ``cuda_graph`` (bool): they
        replayed a captured CUDA graph (one asked for can fail to capture; the session then launches
        without it). ``enqueue_bound`` (bool, None where not measured): the host's median time to
        enqueue one inference exceeded 0.8 x its median GPU time (trtexec's "Throughput may be bound by
        Enqueue Time"), so the latency includes the GPU waiting for the host."""
        return {"cuda_graph": False, "enqueue_bound": None}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the session's resources."""

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LatencyBackend(abc.ABC):
    """One way of running a network on a device. ``settings`` and ``fingerprint`` go into every
    profile, so a measurement always says what produced it."""

    name: ClassVar[str]
    precision: str = "fp32"

    @abc.abstractmethod
    def settings(self) -> dict[str, Any]:
        """The options that change its numbers, as constructor keywords: ``cls(**settings())`` rebuilds it."""

    @abc.abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """The device and software it measures on: what makes two profiles comparable."""

    @abc.abstractmethod
    def session(self, model: nn.Module, input_shape: Sequence[int]) -> Session:
        """Load ``model`` (eval mode, not modified) for inputs of ``input_shape`` (batch first)."""
