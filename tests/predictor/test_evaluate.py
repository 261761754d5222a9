"""``choose``: which predictor ``fit`` saves, from a comparison's per-row hits within ±10 %."""

from __future__ import annotations

import numpy as np

from autoprune.predictor import Comparison, choose, latency_metrics

N = 100


def comparison(hits: dict[str, range | list[int]], *, folds: bool = True, close: float = 1.0) -> Comparison:
    """Every kind predicts 1 ms networks: exactly (``close`` for rf) on its hit rows, 1.5 ms elsewhere.
    The same rows serve as held-out and k-fold rows."""
    measured = np.ones(N)
    predicted = {}
    for kind, rows in hits.items():
        p = np.full(N, 1.5)
        p[list(rows)] = close if kind == "rf" else 1.0
        predicted[kind] = p
    results = {
        kind: {
            "held_out": latency_metrics(p, measured),
            "kfold": latency_metrics(p, measured) if folds else None,
        }
        for kind, p in predicted.items()
    }
    return Comparison(results, np.arange(N), measured, predicted, measured, predicted if folds else {})


def test_the_highest_share_within_10_percent_is_chosen_ties_to_the_lower_mape() -> None:
    choice = choose(comparison({"gb": range(90), "rf": range(95)}))
    assert choice.kind == "rf" and choice.by == "kfold"
    assert choice.reason == "rf has the highest k-fold share within ±10 % (95.0 %)"
    assert choose(comparison({"gb": range(95), "rf": range(95)}, close=1.05)).kind == "gb"  # same share


def test_lpnet_is_kept_within_one_paired_standard_error_of_the_best() -> None:
    # lpnet misses rows 0 and 1 that gb hits and hits row 90 that gb misses: a gap of 1 point, paired
    # differences (+1, +1, -1 on three rows of 100) with a standard error of 1.7 points.
    choice = choose(comparison({"gb": range(90), "lpnet": range(2, 91)}))
    assert choice.kind == "lpnet"
    assert (
        "(89.0 %) is within one paired standard error (1.7 points) of the best, gb's 90.0 %" in choice.reason
    )
    # Ten rows worse: a gap of 10 points against a standard error of 3.0.
    choice = choose(comparison({"gb": range(90), "lpnet": range(80)}))
    assert choice.kind == "gb"
    assert choice.reason.endswith("lpnet's 80.0 % is more than one paired standard error (3.0 points) below")
    assert choose(comparison({"gb": range(90), "lpnet": range(91)})).kind == "lpnet"  # simply the best
    tie = choose(comparison({"rf": range(90), "lpnet": range(90)}, close=1.0))
    assert tie.kind == "lpnet" and "(90.0 %) ties with rf's" in tie.reason


def test_without_folds_the_held_out_rows_decide() -> None:
    choice = choose(comparison({"gb": range(90), "rf": range(95)}, folds=False))
    assert choice.kind == "rf" and choice.by == "held_out" and "held-out share" in choice.reason
