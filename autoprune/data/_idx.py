"""``mnist:DIR`` and ``fashion-mnist:DIR``: the standard IDX files (gzipped or not), parsed with numpy."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from autoprune.data._arrays import array_splits
from autoprune.data._common import existing_dir, one_line
from autoprune.data._registry import DatasetSplits, register_dataset
from autoprune.errors import DataError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
NUM_CLASSES = 10
VAL_FRACTION = 0.1
_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _find(prefix: str, root: Path, stem: str) -> Path:
    """Return ``root/stem.gz`` or ``root/stem``, else raise DataError naming the missing file."""
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise DataError(
        f"{prefix}: '{stem}.gz' (or '{stem}') not found in '{root}': "
        f"put the four IDX files ({', '.join(f + '.gz' for f in _FILES)}) there"
    )


def _read_bytes(prefix: str, path: Path) -> bytes:
    """The (decompressed) content of ``path``; an unreadable or corrupt gzip file is a DataError."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(
            f"{prefix}: cannot read '{path}' ({one_line(err)}): replace it with an intact copy"
        ) from err


def _parse(prefix: str, path: Path, *, magic: int) -> np.ndarray:
    """Parse one IDX file: (N, H, W) uint8 images for ``IMAGES_MAGIC``, (N,) int64 labels otherwise."""
    data = _read_bytes(prefix, path)
    ndim = 3 if magic == IMAGES_MAGIC else 1
    header = 4 * (1 + ndim)
    fix = "replace it with an intact copy"
    if len(data) < header:
        raise DataError(f"{prefix}: '{path}' is truncated ({len(data)} bytes, no IDX header): {fix}")
    found, *dims = (int(v) for v in np.frombuffer(data, dtype=">u4", count=1 + ndim))
    if found != magic:
        kind = "image" if magic == IMAGES_MAGIC else "label"
        raise DataError(
            f"{prefix}: '{path}' has magic number {found}, expected {magic} for an IDX {kind} file: {fix}"
        )
    expected = math.prod(dims)
    if len(data) - header != expected:
        raise DataError(
            f"{prefix}: '{path}' holds {len(data) - header} data bytes but its header "
            f"{'x'.join(map(str, dims))} needs {expected}: {fix}"
        )
    array = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)
    return array.copy() if ndim == 3 else array.astype(np.int64)


def _load_pair(prefix: str, images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Load one images/labels file pair as ((N, 1, H, W) uint8, (N,) int64)."""
    images = _parse(prefix, images_path, magic=IMAGES_MAGIC)
    labels = _parse(prefix, labels_path, magic=LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(
            f"{prefix}: '{images_path}' has {len(images)} images but '{labels_path}' has "
            f"{len(labels)} labels: use matching files"
        )
    if len(labels) and labels.max() >= NUM_CLASSES:
        raise DataError(
            f"{prefix}: '{labels_path}' has label {labels.max()}, expected 0..{NUM_CLASSES - 1}: "
            f"replace it with an intact copy"
        )
    return images[:, None], labels


def load_idx_dir(prefix: str, root: Path, *, image_size: int) -> DatasetSplits:
    """Train/val from the train files (fixed stratified 10 % hold-out), test from the t10k files."""
    existing_dir(prefix, root, holding=f"{_FILES[0]}.gz")
    train_images, train_labels, test_images, test_labels = (_find(prefix, root, stem) for stem in _FILES)
    train = _load_pair(prefix, train_images, train_labels)
    test = _load_pair(prefix, test_images, test_labels)
    return array_splits(
        prefix, train, test, num_classes=NUM_CLASSES, image_size=image_size, val_fraction=VAL_FRACTION
    )


@register_dataset("mnist", takes_dir=True)
def load_mnist(root: Path, *, image_size: int) -> DatasetSplits:
    """MNIST handwritten digits from the IDX files in ``root``."""
    return load_idx_dir("mnist", root, image_size=image_size)


@register_dataset("fashion-mnist", takes_dir=True)
def load_fashion_mnist(root: Path, *, image_size: int) -> DatasetSplits:
    """Fashion-MNIST clothing images from the IDX files in ``root``."""
    return load_idx_dir("fashion-mnist", root, image_size=image_size)
