"""Importance criteria: ``criterion(group) -> scores``, one score per channel of a Torch-Pruning group
(higher is kept), looked up by name so run directories record which one ran.

Built in: ``l1``, ``l2``, ``bn_scale`` (weights only), ``taylor`` (gradients of calibration batches),
``fpgm`` (geometric median), ``correlation`` (most correlated filter pairs), ``redundancy`` (near-duplicate
activation maps on calibration batches), ``pfp`` (provable filter pruning: data sensitivities,
importance-sampled), ``random`` (seeded control). ``channel_scores`` scores a whole model.
"""

from __future__ import annotations

from autoprune.search.criteria._base import (
    CRITERIA,
    Batches,
    Criterion,
    get_criterion,
    list_criteria,
    register_criterion,
)
from autoprune.search.criteria._scores import channel_scores

__all__ = [
    "CRITERIA",
    "Batches",
    "Criterion",
    "channel_scores",
    "get_criterion",
    "list_criteria",
    "register_criterion",
]
