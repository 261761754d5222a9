"""Apply widths to a trained model (keeping the channels a criterion ranks highest), save and reload."""

from __future__ import annotations

from autoprune.prune._pruned import PrunedModel, load_pruned, prune_model, save_pruned

__all__ = ["PrunedModel", "load_pruned", "prune_model", "save_pruned"]
