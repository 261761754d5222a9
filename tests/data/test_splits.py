"""Every dataset gives train / val / test: pairwise disjoint, fixed across loads, stratified where carved
out of the training data, and a shipped test split used as it is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from data_builders import (
    ALL3,
    CIFAR_TEST_LABELS,
    assert_stratified,
    cifar_images,
    idx_images,
    item_ids,
    labels_of,
    make_cifar_dir,
    make_idx_dir,
    make_imagefolder,
)

from autoprune.data import DatasetSplits, load_dataset
from autoprune.data._registry import clear_cache


@dataclass(frozen=True)
class Source:
    """What a dataset's files hold: the training items (ids, labels) and the shipped test ids, if any."""

    spec: str
    image_size: int
    train_ids: list[object]
    train_labels: np.ndarray
    test_ids: list[object] | None


def digits_source(tmp_path: Path) -> Source:
    """sklearn's digits at their native 8x8, where all 1797 images are distinct."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return Source("digits", 8, [image.tobytes() for image in images], bunch.target, None)


def idx_source(tmp_path: Path) -> Source:
    """200 train and 30 t10k uniquely marked images, loaded at 28x28 so their bytes are kept."""
    make_idx_dir(tmp_path, n_train=200, n_test=30, unique=True)
    train = [image.tobytes() for image in idx_images(200, first_id=0)]
    test = [image.tobytes() for image in idx_images(30, first_id=200)]
    return Source(f"fashion-mnist:{tmp_path}", 28, train, np.arange(200) % 10, test)


def cifar_source(tmp_path: Path) -> Source:
    """Five uniquely marked 10-image train batches and a 10-image test batch, at their own 32x32."""
    make_cifar_dir(tmp_path, unique=True)
    train = [image.tobytes() for i in range(5) for image in cifar_images(np.arange(10), first_id=10 * i)]
    test = [image.tobytes() for image in cifar_images(CIFAR_TEST_LABELS, first_id=50)]
    return Source(f"cifar10:{tmp_path}", 32, train, np.tile(np.arange(10), 5), test)


def folder_source(*shipped: str) -> Callable[[Path], Source]:
    """An image folder with 20 images per class in train/ and 3 in each of the ``shipped`` folders."""

    def build(tmp_path: Path) -> Source:
        make_imagefolder(tmp_path, {"train": ALL3}, per_class=20)
        make_imagefolder(tmp_path, dict.fromkeys(shipped, ALL3), per_class=3)

        def files(split: str) -> list[object]:
            return [
                str(tmp_path / split / name / f"{i}.png")
                for name in ALL3
                for i in range(20 if split == "train" else 3)
            ]

        test = files("test") if "test" in shipped else None
        return Source(f"imagefolder:{tmp_path}", 16, files("train"), np.repeat(np.arange(3), 20), test)

    return build


SOURCES = {
    "digits": digits_source,
    "idx": idx_source,
    "cifar10": cifar_source,
    "imagefolder-train": folder_source(),
    "imagefolder-train-val": folder_source("val"),
    "imagefolder-train-test": folder_source("test"),
    "imagefolder-train-val-test": folder_source("val", "test"),
}


def load(source: Source) -> DatasetSplits:
    return load_dataset(source.spec, image_size=source.image_size)


@pytest.mark.parametrize("make", SOURCES.values(), ids=SOURCES.keys())
def test_splits_are_disjoint_and_fixed(tmp_path: Path, make: Callable[[Path], Source]) -> None:
    source = make(tmp_path)
    splits = load(source)
    ids = {name: item_ids(getattr(splits, name)) for name in ("train", "val", "test")}
    for name, items in ids.items():
        assert items and len(set(items)) == len(items), name
    assert not set(ids["train"]) & set(ids["val"])
    assert not set(ids["train"]) & set(ids["test"])
    assert not set(ids["val"]) & set(ids["test"])
    carved = [i for items in ids.values() for i in items if i in set(source.train_ids)]
    assert sorted(carved) == sorted(source.train_ids)  # every training item lands in exactly one split
    assert set(ids["train"]) <= set(source.train_ids)  # nothing trains on a shipped val or test item
    if source.test_ids is not None:
        assert ids["test"] == source.test_ids  # shipped: every item, in its order, nothing added
    else:
        assert set(ids["test"]) <= set(source.train_ids)

    clear_cache()  # a real second load, not the cached object
    again = load(source)
    assert again is not splits
    assert {name: item_ids(getattr(again, name)) for name in ids} == ids


@pytest.mark.parametrize("make", SOURCES.values(), ids=SOURCES.keys())
def test_carved_splits_are_stratified(tmp_path: Path, make: Callable[[Path], Source]) -> None:
    source = make(tmp_path)
    splits = load(source)
    by_id = dict(zip(source.train_ids, source.train_labels.tolist(), strict=True))
    for name in ("train", "val", "test"):
        split = getattr(splits, name)
        carved = [by_id[i] for i in item_ids(split) if i in by_id]
        if carved:  # held out of (or left in) the training data rather than shipped
            assert_stratified(np.array(carved), source.train_labels)
            assert labels_of(split).tolist() == carved  # labels stay with their images
