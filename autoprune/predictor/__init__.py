"""Latency predictors trained on a profile: LPNet, bound to its model's groups and its device."""

from __future__ import annotations

from autoprune.predictor.lpnet import LatencyPredictor, LPNet, fit_lpnet, split_rows
from autoprune.predictor.metrics import latency_metrics

__all__ = ["LPNet", "LatencyPredictor", "fit_lpnet", "latency_metrics", "split_rows"]
