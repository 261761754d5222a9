"""One interface for every latency predictor: ``fit(profile)``, ``predict(widths) -> ms``, ``save``/``load``.

A predictor is bound to what it learnt from: the model's channel groups and convolution layers (its
``Features``) and the profile's device, backend, precision, batch and input shape (``meta``). Using it
with another model or on another device is a one-line ``BindingError``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar, overload

import numpy as np
import torch
from scipy.stats import norm
from torch import Tensor

from autoprune import __version__
from autoprune._io import atomic_write
from autoprune.errors import BindingError, ConfigError, ProfileError
from autoprune.graph import ChannelGroup
from autoprune.latency import Profile, difference, mismatch
from autoprune.predictor.features import Features

FORMAT = 2
MIN_ROWS = 5
# What a predictor records of its profile, and so is bound to (check_device, check_model, space_for).
_BOUND_KEYS = ("model", "num_classes", "input_shape", "batch_size", "backend", "precision",
               "backend_settings", "device", "protocol", "sampling")  # fmt: skip
_REGISTRY: dict[str, type[LatencyPredictor]] = {}
P = TypeVar("P", bound="LatencyPredictor")


def register(cls: type[P]) -> type[P]:
    _REGISTRY[cls.kind] = cls
    return cls


def predictor_kinds() -> list[str]:
    return list(_REGISTRY)


def make_predictor(kind: str, features: Features, **options: Any) -> LatencyPredictor:
    """A new, unfitted predictor of ``kind`` (see ``predictor_kinds()``)."""
    if kind not in _REGISTRY:
        raise ConfigError(f"unknown predictor '{kind}': use one of {', '.join(_REGISTRY)}")
    cls = _REGISTRY[kind]
    if cls.needs_lut and features.lut is None:
        raise ConfigError(
            f"predictor '{kind}' needs the profile's lookup table: run autoprune profile ... --lut first"
        )
    try:
        return cls(features, **options)
    except TypeError as exc:
        raise ConfigError(f"predictor '{kind}' does not take these options: {sorted(options)}") from exc


class LatencyPredictor(ABC):
    kind: ClassVar[str]
    label: ClassVar[str]  # for tables
    needs_lut: ClassVar[bool] = False
    has_spread: ClassVar[bool] = False  # an ensemble: predict_upper works
    differentiable: ClassVar[bool] = False  # predict_fractions carries gradients to the widths

    def __init__(self, features: Features) -> None:
        self.features = features
        self.meta: dict[str, Any] = {}

    @property
    def groups(self) -> list[ChannelGroup]:
        return self.features.groups

    # -- fitting ----------------------------------------------------------------------------------
    def fit(self: P, profile: Profile, rows: Sequence[int] | np.ndarray | None = None) -> P:
        """Learn from the profile's rows (all, or the given row indices); returns self."""
        if [(g.name, g.channels) for g in profile.groups] != [(g.name, g.channels) for g in self.groups]:
            raise BindingError(f"profile '{profile.path}' is of another model than these features")
        idx = np.arange(len(profile.rows)) if rows is None else np.asarray(rows, dtype=int)
        if len(idx) < MIN_ROWS:
            raise ProfileError(
                f"profile '{profile.path}' gives {len(idx)} networks to fit on; a predictor needs "
                f">= {MIN_ROWS}: profile with more --samples"
            )
        widths, latency = profile.widths(), profile.latency_ms()
        self._fit(self.features([widths[i] for i in idx]), np.asarray(latency[idx], dtype=float))
        kinds = profile.rows["kind"].to_numpy()
        self.meta = {
            **{k: profile.meta[k] for k in _BOUND_KEYS},
            "profile": str(profile.path),
            "dense_ms": float(latency[kinds == "dense"][0]) if (kinds == "dense").any() else None,
            "narrowest_ms": float(latency[kinds == "narrowest"][0]) if (kinds == "narrowest").any() else None,
            "reference_ms": profile.reference_ms(),  # the unit of the drift-corrected latencies
            "rows": len(idx),
        }
        return self

    @abstractmethod
    def _fit(self, x: Tensor, latency_ms: np.ndarray) -> None: ...

    @abstractmethod
    def _predict(self, x: Tensor) -> np.ndarray:
        """Latency (ms) of each feature row."""

    def _log_spread(self, x: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(mean, calibrated std) of log-latency; only ensembles have one."""
        raise ConfigError(
            f"predictor '{self.kind}' has no uncertainty: --budget-confidence needs an lpnet ensemble"
        )

    def _z(self, confidence: float) -> float:
        return float(norm.ppf(confidence))

    # -- prediction -------------------------------------------------------------------------------
    @overload
    def predict(self, widths: Mapping[str, int]) -> float: ...
    @overload
    def predict(self, widths: Sequence[Mapping[str, int]]) -> np.ndarray: ...
    def predict(self, widths: Mapping[str, int] | Sequence[Mapping[str, int]]) -> float | np.ndarray:
        """Predicted latency in ms of one widths dict (float) or of many (array)."""
        many = [widths] if isinstance(widths, Mapping) else list(widths)
        with torch.no_grad():
            out = np.asarray(self._predict(self.features(many)), dtype=float)
        return float(out[0]) if isinstance(widths, Mapping) else out

    @overload
    def predict_upper(self, widths: Mapping[str, int], confidence: float) -> float: ...
    @overload
    def predict_upper(self, widths: Sequence[Mapping[str, int]], confidence: float) -> np.ndarray: ...
    def predict_upper(
        self, widths: Mapping[str, int] | Sequence[Mapping[str, int]], confidence: float
    ) -> float | np.ndarray:
        """A latency the network stays under with probability ``confidence``: mean + z * std of the
        ensemble's log-latency, std and z calibrated on rows each member did not train on."""
        if not 0.5 <= confidence < 1:
            raise ConfigError(f"--budget-confidence must be in [0.5, 1), got {confidence}")
        many = [widths] if isinstance(widths, Mapping) else list(widths)
        with torch.no_grad():
            mean, std = self._log_spread(self.features(many))
        out = np.exp(mean + self._z(confidence) * std)
        return float(out[0]) if isinstance(widths, Mapping) else out

    # -- binding ----------------------------------------------------------------------------------
    def check_model(self, groups: Sequence[ChannelGroup], model_spec: str) -> None:
        """Refuse a model whose channel groups are not the ones this predictor was fit on."""
        mine = [(g.name, g.channels) for g in self.groups]
        theirs = [(g.name, g.channels) for g in groups]
        if mine != theirs:
            raise BindingError(
                f"the predictor was fit for model '{self.meta.get('model')}' ({len(mine)} channel groups); "
                f"'{model_spec}' has {len(theirs)} other groups: profile and fit this model first"
            )

    def check_device(self, fingerprint: dict[str, Any]) -> None:
        """Refuse to measure on a device other than the one the predictor's profile came from."""
        here = {"device": fingerprint}
        if mismatch(self.meta, here, ("device",)):
            raise BindingError(
                f"the predictor's profile was measured on {difference('device', self.meta, here)}: "
                "profile this device and fit again"
            )

    # -- persistence ------------------------------------------------------------------------------
    @abstractmethod
    def _state(self) -> dict[str, Any]:
        """The fitted numbers, as tensors, lists and plain values (``torch.load(weights_only=True)``)."""

    @abstractmethod
    def _load_state(self, state: dict[str, Any]) -> None: ...

    def _options(self) -> dict[str, Any]:
        """Constructor options, to rebuild the predictor on load."""
        return {}

    def save(self, path: str | Path) -> None:
        payload = {
            "format": FORMAT,
            "kind": self.kind,
            "autoprune_version": __version__,
            "options": self._options(),
            "features": self.features.state(),
            "state": self._state(),
            "meta": self.meta,
        }
        atomic_write(path, lambda p: torch.save(payload, p))

    @classmethod
    def load(cls, path: str | Path) -> LatencyPredictor:
        path = Path(path)
        if not path.is_file():
            raise BindingError(f"predictor '{path}' does not exist: run autoprune fit PROFILE --out {path}")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            if payload.get("format") != FORMAT:
                raise ValueError(f"format {payload.get('format')}")
            predictor = _REGISTRY[payload["kind"]](
                Features.from_state(payload["features"]), **payload["options"]
            )
            predictor._load_state(payload["state"])
            predictor.meta = payload["meta"]
        except Exception as exc:
            raise BindingError(
                f"'{path}' is not an autoprune predictor of this version ({type(exc).__name__}): "
                "run autoprune fit again"
            ) from exc
        return predictor


__all__ = ["LatencyPredictor", "make_predictor", "predictor_kinds", "register"]
