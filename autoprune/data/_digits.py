"""``digits``: scikit-learn's bundled 8x8 handwritten digits, the embedded default (nothing downloads)."""

from __future__ import annotations

import numpy as np

from autoprune.data._arrays import array_splits
from autoprune.data._registry import DatasetSplits, register_dataset

VAL_FRACTION = 0.2


@register_dataset("digits", takes_dir=False)
def load_digits_splits(*, image_size: int) -> DatasetSplits:
    """1797 images, 10 classes, fixed stratified 80/20 train/val split and no test split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.asarray(bunch.images, dtype=np.float64)  # (1797, 8, 8), values 0..16
    images = np.rint(pixels * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = np.asarray(bunch.target, dtype=np.int64)
    return array_splits(
        "digits", (images, labels), None, num_classes=10, image_size=image_size, val_fraction=VAL_FRACTION
    )
