"""``digits``: scikit-learn's bundled 8x8 handwritten digits, the embedded default (nothing downloads)."""

from __future__ import annotations

import numpy as np

from autoprune.data._arrays import array_splits
from autoprune.data._registry import DatasetSplits, register_dataset

TEST_FRACTION = 0.2
"""Share of all 1797 images held out as the test split (digits ships none): 360 images."""
VAL_FRACTION = 0.2
"""Share of the remaining 1437 held out as the validation split: 288 images, leaving 1149 to train."""


@register_dataset("digits", takes_dir=False)
def load_digits_splits(*, image_size: int) -> DatasetSplits:
    """1797 images, 10 classes; digits ships no test split, so all three are fixed stratified hold-outs.

    test = 20 % of all images (360), val = 20 % of the rest (288), train = the other 1149 (64 / 16 / 20 %).
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.asarray(bunch.images, dtype=np.float64)  # (1797, 8, 8), values 0..16
    images = np.rint(pixels * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = np.asarray(bunch.target, dtype=np.int64)
    return array_splits(
        "digits",
        (images, labels),
        None,
        num_classes=10,
        image_size=image_size,
        val_fraction=VAL_FRACTION,
        test_fraction=TEST_FRACTION,
    )
