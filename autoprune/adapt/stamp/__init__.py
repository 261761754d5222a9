"""STAMP (set-based task-adaptive meta-pruning; seed 002): a mask generator reads a set encoding of a
sample of the target data and outputs every group's keep scores; meta-learned over class subsets of a
reference dataset, it adapts to a new dataset in one pass plus a few gradient steps, under the latency
budget, before any fine-tune (``autoprune adapt``)."""

from __future__ import annotations

from autoprune.adapt.stamp._generator import MaskGenerator, SetEncoder
from autoprune.adapt.stamp._meta import (
    AdaptedMask,
    StampSettings,
    adapt_mask,
    classifier,
    fit_classifier,
    meta_train,
    new_generator,
    penultimate,
    replace_classifier,
    subset_by_classes,
)

__all__ = [
    "AdaptedMask",
    "MaskGenerator",
    "SetEncoder",
    "StampSettings",
    "adapt_mask",
    "classifier",
    "fit_classifier",
    "meta_train",
    "new_generator",
    "penultimate",
    "replace_classifier",
    "subset_by_classes",
]
