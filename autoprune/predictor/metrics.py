"""How well predicted latencies match measured ones."""

from __future__ import annotations

import numpy as np


def latency_metrics(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """MAPE (%), share of networks within +-5 % and +-10 % (%), RMSE (ms) and Kendall's tau (rank
    agreement: what the search needs, since it compares candidates)."""
    from scipy.stats import kendalltau  # imported here: ``autoprune --help`` imports this package

    predicted, measured = np.asarray(predicted, float), np.asarray(measured, float)
    rel = np.abs(predicted - measured) / measured
    tau = kendalltau(predicted, measured).statistic if len(measured) > 1 else float("nan")
    return {
        "mape": float(100 * rel.mean()),
        "within_5": float(100 * (rel <= 0.05).mean()),
        "within_10": float(100 * (rel <= 0.10).mean()),
        "rmse_ms": float(np.sqrt(np.mean((predicted - measured) ** 2))),
        "kendall_tau": float(tau) if np.isfinite(tau) else float("nan"),
        "n": len(measured),
    }
