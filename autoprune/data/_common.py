"""Helpers shared by every loader: directory checks, one-line error text and the fixed hold-out split."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from autoprune.errors import DataError

SPLIT_SEED = 0
"""random_state of every hold-out split, so that a dataset always splits the same way."""


def one_line(text: object) -> str:
    """Collapse ``text`` (often a wrapped exception) to one line for a DataError message."""
    return " ".join(str(text).split())


def existing_dir(prefix: str, root: Path, *, holding: str) -> Path:
    """Return ``root`` if it is a directory, else raise DataError saying what the folder must hold."""
    if not root.exists():
        raise DataError(
            f"{prefix}: directory '{root}' does not exist: pass the folder holding {holding} as {prefix}:DIR"
        )
    if not root.is_dir():
        raise DataError(
            f"{prefix}: '{root}' is not a directory: pass the folder holding {holding} as {prefix}:DIR"
        )
    return root


def holdout_indices(
    labels: Sequence[int] | np.ndarray, *, fraction: float, what: str, held: str = "validation"
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(len(labels))`` into (train, held-out) indices, stratified by label, seed fixed.

    The hold-out gets ceil(fraction * n) items, raised to one per class so every class is in it; if
    some class has a single item the split cannot be stratified and falls back to a plain shuffle.
    ``what`` names the data and ``held`` the split being held out in the too-few-images error.
    """
    from sklearn.model_selection import train_test_split

    y = np.asarray(labels, dtype=np.int64)
    n = len(y)
    if n < 2:
        raise DataError(f"{what} has {n} image(s), too few to hold out a {held} split: add training images")
    counts = np.bincount(y)
    num_classes = int(np.count_nonzero(counts))
    n_held = max(math.ceil(fraction * n), 1)
    stratify: np.ndarray | None = y
    if counts[counts > 0].min() < 2 or n - num_classes < num_classes:
        stratify = None
    else:
        n_held = min(max(n_held, num_classes), n - num_classes)
    train_idx, held_idx = train_test_split(
        np.arange(n), test_size=n_held, stratify=stratify, random_state=SPLIT_SEED
    )
    return np.sort(train_idx), np.sort(held_idx)


def train_val_test_indices(
    labels: Sequence[int] | np.ndarray, *, val_fraction: float, test_fraction: float, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split ``range(len(labels))`` into pairwise disjoint, sorted (train, val, test) indices.

    For a dataset that ships no test split: test is a fixed stratified ``test_fraction`` of all items,
    val a fixed stratified ``val_fraction`` of the rest, so the test split never depends on the val
    fraction and the model selected on val is scored on items neither trained nor selected on.
    """
    y = np.asarray(labels, dtype=np.int64)
    if len(y) < 3:
        raise DataError(
            f"{what} has {len(y)} image(s), too few to hold out validation and test splits: "
            f"add training images"
        )
    rest, test = holdout_indices(y, fraction=test_fraction, what=what, held="test")
    train, val = holdout_indices(y[rest], fraction=val_fraction, what=what)
    return rest[train], rest[val], test
