"""Every predictor against the same rows: one held-out split and k-fold cross-validation.

Held-out: each predictor is fit on the training rows and scored on the held-out ones (the same split
for all). K-fold: each row is predicted by the predictor fit on the other folds, and the metrics are
computed over all rows' out-of-fold predictions. Fit time is the held-out fit's; query time is the
best of three runs of ``predict`` on 1000 candidate networks (features included).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.model_selection import KFold

from autoprune.latency import Profile
from autoprune.predictor.base import LatencyPredictor, make_predictor
from autoprune.predictor.features import Features
from autoprune.predictor.lpnet import split_rows
from autoprune.predictor.metrics import latency_metrics


@dataclass
class Comparison:
    """Per predictor kind: ``held_out`` and ``kfold`` metrics, ``fit_s``, ``query_ms_per_1000``."""

    results: dict[str, dict[str, Any]]
    held_out_rows: np.ndarray
    measured: np.ndarray  # held-out latencies (ms)
    predicted: dict[str, np.ndarray] = field(default_factory=dict)  # held-out predictions per kind

    def to_dict(self) -> dict[str, Any]:
        return {"held_out_rows": self.held_out_rows.tolist(), "predictors": self.results}


def compare(
    profile: Profile,
    features: Features,
    kinds: Sequence[str],
    *,
    holdout: float = 0.2,
    folds: int = 5,
    seed: int = 0,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> Comparison:
    """Fit and score every predictor in ``kinds``; ``options[kind]`` are its constructor options."""
    options = options or {}
    n = len(profile.rows)
    widths, latency = profile.widths(), profile.latency_ms()
    train, test = split_rows(n, holdout, seed)
    rng = np.random.default_rng(seed)
    candidates = [widths[i] for i in rng.integers(0, n, 1000)]
    results: dict[str, dict[str, Any]] = {}
    predicted: dict[str, np.ndarray] = {}

    def new(kind: str) -> LatencyPredictor:
        return make_predictor(kind, features, **dict(options.get(kind, {})))

    for kind in kinds:
        if on_step is not None:
            on_step(kind)
        t0 = time.perf_counter()
        predictor = new(kind).fit(profile, train)
        fit_s = time.perf_counter() - t0
        predicted[kind] = predictor.predict([widths[i] for i in test])
        query_s = min(_timed(predictor.predict, candidates) for _ in range(3))
        oof = np.empty(n)
        if folds >= 2:
            for fit_rows, score_rows in KFold(folds, shuffle=True, random_state=seed).split(np.arange(n)):
                oof[score_rows] = new(kind).fit(profile, fit_rows).predict([widths[i] for i in score_rows])
        results[kind] = {
            "label": predictor.label,
            "held_out": latency_metrics(predicted[kind], latency[test]),
            "kfold": latency_metrics(oof, latency) if folds >= 2 else None,
            "folds": folds,
            "fit_s": fit_s,
            "query_ms_per_1000": 1000 * query_s,
        }
    return Comparison(results, test, np.asarray(latency[test], float), predicted)


def _timed(call: Callable[[list[dict[str, int]]], object], arg: list[dict[str, int]]) -> float:
    t0 = time.perf_counter()
    call(arg)
    return time.perf_counter() - t0


__all__ = ["Comparison", "compare"]
