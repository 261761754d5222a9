"""Latency predictors trained on a profile, bound to their model's groups and their device: LPNet (an
ensemble, differentiable in the widths) and the baselines it is compared against."""

from __future__ import annotations

from autoprune.predictor._for_profile import features_for_profile
from autoprune.predictor.active import ActiveAcquirer, acquisition_scores, active_curve
from autoprune.predictor.base import (
    PREDICTORS,
    LatencyPredictor,
    make_predictor,
    predictor_class,
    predictor_kinds,
)
from autoprune.predictor.evaluate import COVERAGE_LEVELS, Choice, Comparison, choose, compare
from autoprune.predictor.features import Features, layers_of
from autoprune.predictor.lpnet import LPNet, LPNetPredictor, split_rows
from autoprune.predictor.metrics import latency_metrics

__all__ = [
    "COVERAGE_LEVELS",
    "PREDICTORS",
    "ActiveAcquirer",
    "Choice",
    "Comparison",
    "Features",
    "LPNet",
    "LPNetPredictor",
    "LatencyPredictor",
    "acquisition_scores",
    "active_curve",
    "choose",
    "compare",
    "features_for_profile",
    "latency_metrics",
    "layers_of",
    "make_predictor",
    "predictor_class",
    "predictor_kinds",
    "split_rows",
]
