"""One interface for every latency predictor: ``fit(profile)``, ``predict(widths) -> ms``,
``predict_upper(widths, confidence)``, ``save``/``load``.

A predictor is bound to what it learnt from: the model's channel groups and convolution layers (its
``Features``) and the profile's device, backend, precision, batch and input shape (``meta``). Using it
with another model or on another device is a one-line ``BindingError``.

The upper bound is conformal (Vovk et al. 2005; Lei et al. 2018): ``fit`` also records each fit row's
log(measured / predicted), predicted by a model that did not train on that row (K-fold refits, or what
the predictor gets for free: LPNet's held-back members, a random forest's out-of-bag trees). The bound at
confidence c multiplies the prediction by the ceil((n + 1) c)-th smallest of those n ratios. Were the
calibrating rows apart from the fitting ones (split conformal), a new network drawn like the profile's
would measure under it with probability >= c whatever the error distribution; from out-of-fold errors
(CV+, Barber et al. 2021) the guarantee is only >= 2c - 1, but coverage is close to c in practice, and
``compare`` measures it on held-out networks (docs/benchmarks/predictor.md). Either way it assumes the
rows are exchangeable: sampled from the same space, measured the same way.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar, overload

import numpy as np
import torch
from torch import Tensor

from autoprune import __version__
from autoprune._io import atomic_write
from autoprune._registry import Registry
from autoprune.errors import BindingError, ConfigError, ProfileError
from autoprune.graph import ChannelGroup
from autoprune.latency import Profile, difference, mismatch
from autoprune.predictor.features import Features

FORMAT = 3
MIN_ROWS = 5
# Refits for the out-of-fold errors of predictors that get none for free: on 90 % of the rows they err
# little more than the fit on all of them (with 5 folds gradient boosting's bounds over-covered by 4 points).
CALIBRATION_FOLDS = 10
# What a predictor records of its profile, and so is bound to (check_device, check_model, space_for).
_BOUND_KEYS = ("model", "num_classes", "input_shape", "batch_size", "backend", "precision",
               "backend_settings", "device", "protocol", "sampling")  # fmt: skip
_P = "autoprune.predictor"
PREDICTORS: Registry[LatencyPredictor] = Registry(
    "predictor",
    {
        "lpnet": f"{_P}.lpnet:LPNetPredictor",
        "flops": f"{_P}.baselines:FlopsInterpolation",
        "lut": f"{_P}.baselines:LutSum",
        "lut_linear": f"{_P}.baselines:LutLinear",
        "gb": f"{_P}.baselines:GradientBoosting",
        "rf": f"{_P}.baselines:RandomForest",
        "ridge": f"{_P}.baselines:Ridge",
    },
    key="kind",
    ordered=True,  # predictor_kinds()'s order, the comparison tables' too: LPNet first
)
P = TypeVar("P", bound="LatencyPredictor")


def register(cls: type[P]) -> type[P]:
    """Class decorator: make ``cls`` available as ``make_predictor(cls.kind, ...)``."""
    return PREDICTORS.register(cls)


def predictor_kinds() -> list[str]:
    return PREDICTORS.names()


def predictor_class(kind: str) -> type[LatencyPredictor]:
    return PREDICTORS.get(kind)


def make_predictor(kind: str, features: Features, **options: Any) -> LatencyPredictor:
    """A new, unfitted predictor of ``kind`` (see ``predictor_kinds()``)."""
    cls = predictor_class(kind)
    if cls.needs_lut and features.lut is None:
        raise ConfigError(
            f"predictor '{kind}' needs the profile's lookup table: run autoprune profile ... --lut first"
        )
    return PREDICTORS.create(kind, features, **options)


class LatencyPredictor(ABC):
    kind: ClassVar[str]
    label: ClassVar[str]  # for tables
    needs_lut: ClassVar[bool] = False
    has_spread: ClassVar[bool] = False  # an ensemble: _log_spread gives its members' disagreement
    differentiable: ClassVar[bool] = False  # predict_fractions carries gradients to the widths

    def __init__(self, features: Features) -> None:
        self.features = features
        self.meta: dict[str, Any] = {}
        self.log_ratios: list[float] = []  # out-of-fold log(measured / predicted) of the fit rows, sorted

    @property
    def groups(self) -> list[ChannelGroup]:
        return self.features.groups

    # -- fitting ----------------------------------------------------------------------------------
    def fit(
        self: P, profile: Profile, rows: Sequence[int] | np.ndarray | None = None, *, calibrate: bool = True
    ) -> P:
        """Learn from the profile's rows (all, or the given row indices); returns self. ``calibrate``:
        also record the out-of-fold errors ``predict_upper`` needs (K refits for some predictors)."""
        if [(g.name, g.channels) for g in profile.groups] != [(g.name, g.channels) for g in self.groups]:
            raise BindingError(f"profile '{profile.path}' is of another model than these features")
        idx = np.arange(len(profile.rows)) if rows is None else np.asarray(rows, dtype=int)
        if len(idx) < MIN_ROWS:
            raise ProfileError(
                f"profile '{profile.path}' gives {len(idx)} networks to fit on; a predictor needs "
                f">= {MIN_ROWS}: profile with more --samples"
            )
        widths, latency = profile.widths(), profile.latency_ms()
        x, y = self.features([widths[i] for i in idx]), np.asarray(latency[idx], dtype=float)
        self._fit(x, y)
        self.log_ratios = sorted(np.log(y / self._out_of_fold_ms(x, y)).tolist()) if calibrate else []
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

    def _out_of_fold_ms(self, x: Tensor, latency_ms: np.ndarray) -> np.ndarray:
        """Each row's latency as predicted by a fresh predictor fit on the other folds."""
        n = len(latency_ms)
        fold = np.random.default_rng(0).permutation(n) % min(CALIBRATION_FOLDS, n)
        out = np.empty(n)
        for k in range(fold.max() + 1):
            other = type(self)(self.features, **self._options())
            other._fit(x[fold != k], latency_ms[fold != k])
            out[fold == k] = other._predict(x[fold == k])
        return out

    def _log_spread(self, x: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) of the ensemble members' log-latencies; only ensembles have one."""
        raise ConfigError(f"predictor '{self.kind}' is not an ensemble: use an lpnet predictor")

    def log_margin(self, confidence: float) -> float:
        """log(upper bound / prediction) at ``confidence``: the ceil((n + 1) * confidence)-th smallest
        of the n out-of-fold log ratios measured / predicted (split-conformal)."""
        if not 0.5 <= confidence < 1:
            raise ConfigError(f"--budget-confidence must be in [0.5, 1), got {confidence}")
        n = len(self.log_ratios)
        if n == 0:
            raise ConfigError(f"this {self.kind} predictor was fit with calibrate=False: fit it again")
        rank = _conformal_rank(n, confidence)
        if rank > n:
            need = next(m for m in itertools.count(n) if _conformal_rank(m, confidence) <= m)
            raise ConfigError(
                f"a {confidence} bound needs >= {need} networks to calibrate on, the predictor was fit on "
                f"{n}: profile more --samples, or lower --budget-confidence"
            )
        return self.log_ratios[rank - 1]

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

    def predict_fractions(self, fractions: Tensor) -> Tensor:
        """Latency (ms) of kept fractions (..., groups), differentiable: only a ``differentiable`` kind."""
        raise ConfigError(f"predictor '{self.kind}' is not differentiable: fit one with --predictor lpnet")

    @overload
    def predict_upper(self, widths: Mapping[str, int], confidence: float) -> float: ...
    @overload
    def predict_upper(self, widths: Sequence[Mapping[str, int]], confidence: float) -> np.ndarray: ...
    def predict_upper(
        self, widths: Mapping[str, int] | Sequence[Mapping[str, int]], confidence: float
    ) -> float | np.ndarray:
        """A latency that a network drawn like the profile's measures under with probability
        ``confidence``: the prediction times the conformal quantile of measured / predicted."""
        return self.predict(widths) * self.upper_factor(confidence)

    def upper_factor(self, confidence: float | None) -> float:
        """What ``predict_upper`` multiplies the prediction by (1 with no ``confidence``)."""
        return 1.0 if confidence is None else math.exp(self.log_margin(confidence))

    def narrowest_ms(self, narrowest: Mapping[str, int]) -> float:
        """The narrowest network's latency: as profiled when the profile has it, else predicted."""
        return float(self.meta.get("narrowest_ms") or self.predict(narrowest))

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
            "log_ratios": self.log_ratios,
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
            predictor = predictor_class(payload["kind"])(
                Features.from_state(payload["features"]), **payload["options"]
            )
            predictor._load_state(payload["state"])
            predictor.log_ratios = [float(r) for r in payload["log_ratios"]]
            predictor.meta = payload["meta"]
        except Exception as exc:
            raise BindingError(
                f"'{path}' is not an autoprune predictor of this version ({type(exc).__name__}): "
                "run autoprune fit again"
            ) from exc
        return predictor


def _conformal_rank(n: int, confidence: float) -> int:
    return math.ceil((n + 1) * confidence - 1e-9)  # the tolerance: (19 + 1) * 0.95 is 19.000000000000004


__all__ = [
    "PREDICTORS",
    "LatencyPredictor",
    "make_predictor",
    "predictor_class",
    "predictor_kinds",
    "register",
]
