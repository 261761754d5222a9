"""Fixture writers and checks shared by the tests/data tests: synthetic IDX files, CIFAR pickles,
image folders whose pixels encode their label, and ways to name the items behind a split."""

from __future__ import annotations

import gzip
import pickle
import struct
from collections.abc import Sized
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from autoprune.data import load_dataset
from autoprune.errors import DataError


def n_items(dataset: Dataset) -> int:
    """``len(dataset)``, checking that the split is a sized Dataset (every split must support len)."""
    assert isinstance(dataset, Dataset) and isinstance(dataset, Sized)
    return len(dataset)


def pixel_for(label: int) -> int:
    """The constant grey level that encodes ``label`` in the synthetic images."""
    return 20 * label + 10


def encoded_images(labels: np.ndarray, shape: tuple[int, ...], *, first_id: int | None = None) -> np.ndarray:
    """uint8 images of ``shape`` per item whose every pixel is ``pixel_for(label)``.

    With ``first_id``, item i's last two pixels instead hold ``first_id + i`` (low, high byte), so
    that every image is unique and its bytes say which item of which file it came from.
    """
    values = np.array([pixel_for(int(y)) for y in labels], dtype=np.uint8)
    images = np.broadcast_to(values.reshape(-1, *([1] * len(shape))), (len(labels), *shape)).copy()
    if first_id is not None:
        ids = first_id + np.arange(len(labels))
        flat = images.reshape(len(labels), -1)
        flat[:, -2], flat[:, -1] = ids % 256, ids // 256
    return images


def assert_labels_encoded(dataset: Dataset, size: int, channel: int = 0) -> None:
    """Every item is a constant float32 [3, size, size] image whose level rises strictly with its label."""
    levels: dict[int, set[float]] = {}
    for i in range(n_items(dataset)):
        x, y = dataset[i]
        assert x.shape == (3, size, size) and x.dtype == torch.float32
        assert torch.allclose(x[channel], x[channel, 0, 0].expand(size, size), atol=1e-5)
        levels.setdefault(int(y), set()).add(round(float(x[channel, 0, 0]), 4))
    assert all(len(v) == 1 for v in levels.values()), levels
    ordered = [next(iter(levels[k])) for k in sorted(levels)]
    assert ordered == sorted(ordered) and len(set(ordered)) == len(ordered)


def write_idx(path: Path, array: np.ndarray, *, magic: int, count: int | None = None) -> None:
    """Write ``array`` as an IDX file, gzipped if the name ends in .gz; ``count`` overrides the header N."""
    n = len(array) if count is None else count
    payload = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", n, *array.shape[1:])
    payload += array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def idx_images(n: int, *, first_id: int | None = None) -> np.ndarray:
    """The (n, 28, 28) images make_idx_dir writes for n items labelled ``arange(n) % 10``."""
    return encoded_images(np.arange(n) % 10, (28, 28), first_id=first_id)


def make_idx_dir(
    root: Path, *, gz: bool = True, n_train: int = 50, n_test: int = 20, unique: bool = False
) -> Path:
    """A tiny MNIST-style folder: 28x28 images whose grey level encodes their label 0..9.

    ``unique`` marks every image with its id (train 0.., t10k n_train..), as ``idx_images`` does.
    """
    root.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for split, n, first_id in (("train", n_train, 0), ("t10k", n_test, n_train)):
        labels = np.arange(n) % 10
        images = idx_images(n, first_id=first_id if unique else None)
        write_idx(root / f"{split}-images-idx3-ubyte{ext}", images, magic=2051)
        write_idx(root / f"{split}-labels-idx1-ubyte{ext}", labels, magic=2049)
    return root


def cifar_images(labels: np.ndarray, *, first_id: int | None = None) -> np.ndarray:
    """(N, 3, 32, 32) images: red encodes the label, green is 5 and blue 250 (bar an id, see
    ``encoded_images``, in the last two blue pixels with ``first_id``)."""
    images = np.empty((len(labels), 3, 32, 32), dtype=np.uint8)
    images[:, 0] = encoded_images(labels, (32, 32))
    images[:, 1], images[:, 2] = 5, 250
    if first_id is not None:
        ids = first_id + np.arange(len(labels))
        images[:, 2, -1, -2], images[:, 2, -1, -1] = ids % 256, ids // 256
    return images


def write_cifar_batch(path: Path, labels: np.ndarray, *, first_id: int | None = None) -> None:
    """A CIFAR-10 pickle batch of ``cifar_images(labels, first_id=first_id)``."""
    images = cifar_images(labels, first_id=first_id)
    batch = {b"data": images.reshape(len(labels), -1), b"labels": [int(y) for y in labels]}
    path.write_bytes(pickle.dumps(batch))


CIFAR_TEST_LABELS = np.arange(10)[::-1]


def make_cifar_dir(root: Path, *, unique: bool = False) -> Path:
    """Five train batches of 10 images (one per class) and a 10-image test batch.

    ``unique`` marks every image with its id: train 0..49 in batch order, test 50..59.
    """
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        first_id = 10 * (i - 1) if unique else None
        write_cifar_batch(root / f"data_batch_{i}", np.arange(10), first_id=first_id)
    write_cifar_batch(root / "test_batch", CIFAR_TEST_LABELS, first_id=50 if unique else None)
    return root


CLASS_LEVELS = {"ant": 40, "bee": 120, "cat": 200, "dog": 90}


def make_imagefolder(root: Path, splits: dict[str, tuple[str, ...]], per_class: int = 4) -> Path:
    """PNG folders ``root/split/class``; "cat" images are greyscale, the others RGB, all constant."""
    for split, classes in splits.items():
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            level = CLASS_LEVELS[name]
            for i in range(per_class):
                image = (
                    Image.new("L", (10, 12), level)
                    if name == "cat"
                    else Image.new("RGB", (12, 10), (level, level, level))
                )
                image.save(folder / f"{i}.png")
    return root


ALL3 = ("ant", "bee", "cat")


def assert_one_line_error(spec: str, *needles: str, image_size: int = 32) -> None:
    with pytest.raises(DataError) as info:
        load_dataset(spec, image_size=image_size)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message and message
    for needle in needles:
        assert needle in message, message


def item_ids(dataset: Dataset) -> list[object]:
    """What each item of a split is made of: its stored image bytes (in-memory sets, which keep the
    source pixels when not resized) or its file path (imagefolder), in item order."""
    from torch.utils.data import Subset
    from torchvision.datasets import ImageFolder

    from autoprune.data._arrays import ArrayDataset

    if isinstance(dataset, ArrayDataset):
        return [image.numpy().tobytes() for image in dataset.images]
    if isinstance(dataset, Subset) and isinstance(dataset.dataset, ImageFolder):
        return [dataset.dataset.samples[i][0] for i in dataset.indices]
    if isinstance(dataset, ImageFolder):
        return [path for path, _ in dataset.samples]
    raise AssertionError(f"no item ids for a {type(dataset).__name__}")


def labels_of(dataset: Dataset) -> np.ndarray:
    """The label of every item, in order."""
    return np.array([dataset[i][1] for i in range(n_items(dataset))], dtype=np.int64)


def assert_stratified(split: np.ndarray, source: np.ndarray) -> None:
    """Every class has its share of ``source``'s labels in ``split``, to within one item."""
    expected = np.bincount(source) / len(source) * len(split)
    got = np.bincount(split, minlength=len(expected))
    assert np.all(np.abs(got - expected) <= 1), (got.tolist(), expected.round(2).tolist())
