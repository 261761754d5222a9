"""Every predictor against the same rows: one held-out split and k-fold cross-validation.

Held-out: each predictor is fit on the training rows and scored on the held-out ones (the same split
for all). K-fold: each row is predicted by the predictor fit on the other folds, and the metrics are
computed over all rows' out-of-fold predictions. Coverage: the share of the held-out rows (and with
``kfold_coverage`` of all rows, out of fold) that measure under the predictor's ``predict_upper`` bound
at 0.90 and 0.95, the bound calibrated on its own fit rows only. Fit time is the held-out fit's
(calibration included); query time is the best of three runs of ``predict`` on 1000 candidate networks
(features included).

``choose`` picks the predictor to save from a comparison.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autoprune.errors import ConfigError
from autoprune.latency import Profile
from autoprune.predictor.base import LatencyPredictor, make_predictor, predictor_class
from autoprune.predictor.features import Features
from autoprune.predictor.lpnet import split_rows
from autoprune.predictor.metrics import latency_metrics

COVERAGE_LEVELS = (0.9, 0.95)


@dataclass
class Comparison:
    """Per predictor kind: ``held_out`` and ``kfold`` metrics, ``coverage`` (``held_out`` and ``kfold``:
    level -> % of rows under the bound, or None where too few rows calibrate it; ``margin``: level -> %
    the held-out fit's bound lies above its prediction), ``fit_s``, ``query_ms_per_1000``."""

    results: dict[str, dict[str, Any]]
    held_out_rows: np.ndarray
    measured: np.ndarray  # held-out latencies (ms)
    predicted: dict[str, np.ndarray] = field(default_factory=dict)  # held-out predictions per kind
    latency: np.ndarray = field(default_factory=lambda: np.empty(0))  # every row's latency (ms)
    kfold_predicted: dict[str, np.ndarray] = field(default_factory=dict)  # out-of-fold, every row

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
    kfold_coverage: bool = False,
) -> Comparison:
    """Fit and score every predictor in ``kinds``; ``options[kind]`` are its constructor options.
    ``kfold_coverage``: also calibrate every fold's fit, for the bounds' coverage over all rows (up to
    11 fits a fold instead of one: the benchmark's, not ``autoprune fit``'s)."""
    options = options or {}
    n = len(profile.rows)
    if folds > n:
        raise ConfigError(
            f"--folds {folds} is more than the {n} networks of the profile: pass --folds {n} or fewer "
            "(0: no k-fold), or profile more networks"
        )
    widths, latency = profile.widths(), profile.latency_ms()
    train, test = split_rows(n, holdout, seed)
    rng = np.random.default_rng(seed)
    candidates = [widths[i] for i in rng.integers(0, n, 1000)]
    out = Comparison({}, test, np.asarray(latency[test], float), latency=np.asarray(latency, float))
    for kind in kinds:
        if on_step is not None:
            on_step(kind)

        def new(kind: str = kind) -> LatencyPredictor:
            return make_predictor(kind, features, **dict(options.get(kind, {})))

        t0 = time.perf_counter()
        predictor = new().fit(profile, train)
        fit_s = time.perf_counter() - t0
        out.predicted[kind] = predictor.predict([widths[i] for i in test])
        query_s = min(_timed(predictor.predict, candidates) for _ in range(3))
        under = _under_bounds(predictor, out.predicted[kind], latency[test])
        kfold_under: dict[float, np.ndarray | None] | None = None
        if folds >= 2:
            out.kfold_predicted[kind], kfold_under = _kfold(
                new, profile, folds=folds, seed=seed, coverage=kfold_coverage
            )
        out.results[kind] = {
            "label": predictor.label,
            "held_out": latency_metrics(out.predicted[kind], latency[test]),
            "kfold": latency_metrics(out.kfold_predicted[kind], latency) if folds >= 2 else None,
            "coverage": {
                "held_out": _shares(under),
                "kfold": None if kfold_under is None else _shares(kfold_under),
                "margin": {
                    f"{c:.2f}": None if m is None else 100 * math.expm1(m)
                    for c, m in _log_margins(predictor).items()
                },
            },
            "folds": folds,
            "fit_s": fit_s,
            "query_ms_per_1000": 1000 * query_s,
        }
    return out


def _kfold(
    new: Callable[[], LatencyPredictor], profile: Profile, *, folds: int, seed: int, coverage: bool
) -> tuple[np.ndarray, dict[float, np.ndarray | None] | None]:
    """Every row's out-of-fold prediction, and with ``coverage`` per level whether each row measures
    under its fold's bound (None: not asked)."""
    from sklearn.model_selection import KFold

    widths, latency, n = profile.widths(), profile.latency_ms(), len(profile.rows)
    oof = np.empty(n)
    hits: dict[float, list[np.ndarray | None]] = {c: [] for c in COVERAGE_LEVELS}
    for fit_rows, score_rows in KFold(folds, shuffle=True, random_state=seed).split(np.arange(n)):
        fold_predictor = new().fit(profile, fit_rows, calibrate=coverage)
        oof[score_rows] = fold_predictor.predict([widths[i] for i in score_rows])
        if coverage:
            for c, hit in _under_bounds(fold_predictor, oof[score_rows], latency[score_rows]).items():
                hits[c].append(hit)
    return oof, ({c: _joined(h) for c, h in hits.items()} if coverage else None)


@dataclass(frozen=True)
class Choice:
    """Which predictor to save, and why (a sentence for people)."""

    kind: str
    reason: str
    by: str  # the metrics it was chosen on: "kfold", or "held_out" without folds


def choose(comparison: Comparison) -> Choice:
    """The most accurate predictor: the highest share within ±10 % (k-fold, or held-out without folds),
    ties to the lower MAPE. A differentiable one (LPNet) is kept instead when its share is within one
    paired standard error of the best's (the one-standard-error rule, Breiman et al. 1984): a gap that
    small is as much the rows' noise as the predictors' difference."""
    results = comparison.results
    by = "kfold" if all(r["kfold"] for r in results.values()) else "held_out"
    where = "k-fold" if by == "kfold" else "held-out"
    measured = comparison.latency if by == "kfold" else comparison.measured
    predicted = comparison.kfold_predicted if by == "kfold" else comparison.predicted

    def share(kind: str) -> float:
        return float(results[kind][by]["within_10"])

    ranked = sorted(results, key=lambda k: (-share(k), results[k][by]["mape"]))
    best = ranked[0]
    said = f"{best} has the highest {where} share within ±10 % ({share(best):.1f} %)"
    alt = next((k for k in ranked if predictor_class(k).differentiable), best)
    if alt == best:
        return Choice(best, said, by)
    hit = {k: np.abs(predicted[k] - measured) / measured <= 0.10 for k in (best, alt)}  # as latency_metrics
    diff = hit[best].astype(float) - hit[alt].astype(float)
    se = float(100 * diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
    if share(alt) == share(best):
        kept = f"{alt}'s {where} share within ±10 % ({share(alt):.1f} %) ties with {best}'s"
        return Choice(alt, f"{kept}: the differentiable one is kept", by)
    if share(best) - share(alt) <= se:
        return Choice(
            alt,
            f"{alt}'s {where} share within ±10 % ({share(alt):.1f} %) is within one paired standard error "
            f"({se:.1f} points) of the best, {best}'s {share(best):.1f} %: the differentiable one is kept",
            by,
        )
    return Choice(best, f"{said}; {alt}'s {share(alt):.1f} % is more than one paired standard error "
                        f"({se:.1f} points) below", by)  # fmt: skip


def _log_margins(predictor: LatencyPredictor) -> dict[float, float | None]:
    """Level -> log(bound / prediction); None where too few fit rows calibrate it."""
    out: dict[float, float | None] = {}
    for c in COVERAGE_LEVELS:
        try:
            out[c] = predictor.log_margin(c)
        except ConfigError:
            out[c] = None
    return out


def _under_bounds(
    predictor: LatencyPredictor, predicted: np.ndarray, measured: np.ndarray
) -> dict[float, np.ndarray | None]:
    """Level -> which rows measure under the bound (None: too few fit rows to calibrate it)."""
    margins = _log_margins(predictor).items()
    return {c: None if m is None else measured <= predicted * math.exp(m) for c, m in margins}


def _joined(parts: list[np.ndarray | None]) -> np.ndarray | None:
    return None if any(p is None for p in parts) else np.concatenate(parts)  # type: ignore[arg-type]


def _shares(under: Mapping[float, np.ndarray | None]) -> dict[str, float | None]:
    """Level ("0.90") -> share of rows under the bound, in %."""
    return {f"{c:.2f}": None if u is None else float(100 * u.mean()) for c, u in under.items()}


def _timed(call: Callable[[list[dict[str, int]]], object], arg: list[dict[str, int]]) -> float:
    t0 = time.perf_counter()
    call(arg)
    return time.perf_counter() - t0


__all__ = ["COVERAGE_LEVELS", "Choice", "Comparison", "choose", "compare"]
