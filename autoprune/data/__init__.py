"""Datasets for training and evaluating pruned CNNs, named by spec strings ("digits", "mnist:DIR").

Every split yields (float32 [3, S, S] image, int label); nothing is ever downloaded.
"""

from __future__ import annotations

# Importing the built-in loaders registers them.
from autoprune.data import _cifar, _digits, _idx, _imagefolder  # noqa: F401
from autoprune.data._registry import DatasetSplits, list_datasets, load_dataset, register_dataset

__all__ = ["DatasetSplits", "list_datasets", "load_dataset", "register_dataset"]
