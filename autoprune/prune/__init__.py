"""Apply widths to a trained model (keeping the channels a criterion ranks highest), recover accuracy
after pruning, save and reload."""

from __future__ import annotations

from autoprune.prune._pruned import PrunedModel, load_pruned, prune_model, save_pruned
from autoprune.prune.proxy import AdaptiveBNProxy, ProxyScore
from autoprune.prune.recover import recalibrate_bn
from autoprune.training import calibration_batches

__all__ = [
    "AdaptiveBNProxy",
    "ProxyScore",
    "PrunedModel",
    "calibration_batches",
    "load_pruned",
    "prune_model",
    "recalibrate_bn",
    "save_pruned",
]
