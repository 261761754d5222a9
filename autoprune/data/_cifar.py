"""``cifar10:DIR``: the CIFAR-10 python pickle batches, in DIR or DIR/cifar-10-batches-py.

The batches are pickles, and unpickling runs code: point this only at files from a trusted source.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from autoprune.data._arrays import array_splits
from autoprune.data._common import existing_dir, one_line
from autoprune.data._registry import DatasetSplits, register_dataset
from autoprune.errors import DataError

NUM_CLASSES = 10
VAL_FRACTION = 0.1
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
_SUBDIR = "cifar-10-batches-py"
_PIXELS = 3 * 32 * 32


def _batch_dir(root: Path) -> Path:
    """``root`` itself if it holds the batches, else ``root/cifar-10-batches-py`` if that does."""
    existing_dir("cifar10", root, holding=f"data_batch_1..5 and {TEST_BATCH} (or {_SUBDIR}/)")
    if not (root / TRAIN_BATCHES[0]).exists() and (root / _SUBDIR).is_dir():
        return root / _SUBDIR
    return root


def _load_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one pickle batch as ((N, 3, 32, 32) uint8, (N,) int64), checking keys, shapes and labels."""
    fix = "replace it with an intact copy of the CIFAR-10 python batch"
    try:
        with path.open("rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except Exception as err:  # a malformed pickle can raise almost anything
        raise DataError(f"cifar10: cannot unpickle '{path}' ({one_line(err)}): {fix}") from err
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"cifar10: '{path}' has no b'data' and b'labels' entries: {fix}")
    try:
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (TypeError, ValueError) as err:
        raise DataError(f"cifar10: '{path}' has unreadable data or labels ({one_line(err)}): {fix}") from err
    if data.ndim != 2 or data.shape[1] != _PIXELS or labels.shape != (len(data),):
        raise DataError(
            f"cifar10: '{path}' has data {data.shape} and labels {labels.shape}, "
            f"expected (N, {_PIXELS}) and (N,): {fix}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(f"cifar10: '{path}' has labels outside 0..{NUM_CLASSES - 1}: {fix}")
    return data.reshape(-1, 3, 32, 32), labels


@register_dataset("cifar10", takes_dir=True)
def load_cifar10(root: Path, *, image_size: int) -> DatasetSplits:
    """Train/val from data_batch_1..5 (fixed stratified 10 % hold-out), test from test_batch."""
    batch_dir = _batch_dir(root)
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        if not (batch_dir / name).is_file():
            raise DataError(
                f"cifar10: '{name}' not found in '{batch_dir}': put data_batch_1..5 and {TEST_BATCH} there"
            )
    parts = [_load_batch(batch_dir / name) for name in TRAIN_BATCHES]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    del parts
    test = _load_batch(batch_dir / TEST_BATCH)
    return array_splits(
        "cifar10",
        train,
        test,
        num_classes=NUM_CLASSES,
        image_size=image_size,
        val_fraction=VAL_FRACTION,
        augment_fits=True,  # small natural photos: crop + flip is the standard recipe
    )
