"""Tests for autoprune.data: the bundled digits set and tiny synthetic IDX, CIFAR and imagefolder fixtures."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from data_builders import (
    ALL3,
    CLASS_LEVELS,
    assert_labels_encoded,
    assert_one_line_error,
    encoded_images,
    make_cifar_dir,
    make_idx_dir,
    make_imagefolder,
    n_items,
    write_idx,
)

from autoprune.data import DatasetSplits, list_datasets, load_dataset, register_dataset
from autoprune.errors import DataError

# ---------------------------------------------------------------- registry


def test_list_datasets() -> None:
    assert list_datasets() == ["cifar10:DIR", "digits", "fashion-mnist:DIR", "imagefolder:DIR", "mnist:DIR"]


def test_register_dataset_is_used_and_named_by_spec(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from autoprune.data import _registry

    monkeypatch.setattr(_registry, "_LOADERS", dict(_registry._LOADERS))
    seen: list[object] = []

    @register_dataset("toy", takes_dir=True)
    def load_toy(root: Path, *, image_size: int) -> DatasetSplits:
        seen.append((root, image_size))
        return load_dataset("digits", image_size=image_size)

    splits = load_dataset(f"toy:{tmp_path}", image_size=12)
    assert seen == [(tmp_path, 12)] and splits.name == f"toy:{tmp_path}"
    assert "toy:DIR" in list_datasets()
    with pytest.raises(ValueError):
        register_dataset("toy", takes_dir=False)(load_toy)


def test_augment_fits_small_natural_images_only(tmp_path: Path) -> None:
    """Crop + flip suits photos (cifar10, imagefolder), not digits or clothing that a flip changes."""
    idx = make_idx_dir(tmp_path / "idx")
    folder = make_imagefolder(tmp_path / "folder", {"train": ALL3, "val": ALL3, "test": ALL3}, per_class=2)
    fits = {
        "digits": False,
        f"mnist:{idx}": False,
        f"fashion-mnist:{idx}": False,
        f"cifar10:{make_cifar_dir(tmp_path / 'cifar')}": True,
        f"imagefolder:{folder}": True,
    }
    assert {spec: load_dataset(spec, image_size=8).augment_fits for spec in fits} == fits


# ---------------------------------------------------------------- digits


def digits_indices() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) indices into sklearn's digits: test 20 % of all, val 20 % of the rest."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    target = load_digits().target
    rest, test = train_test_split(np.arange(len(target)), test_size=0.2, stratify=target, random_state=0)
    rest = np.sort(rest)
    train, val = train_test_split(rest, test_size=0.2, stratify=target[rest], random_state=0)
    return np.sort(train), np.sort(val), np.sort(test)


def test_digits_shapes_and_split_sizes() -> None:
    from sklearn.datasets import load_digits

    splits = load_dataset("digits")
    assert splits.name == "digits" and splits.num_classes == 10 and splits.input_shape == (3, 32, 32)
    assert (n_items(splits.train), n_items(splits.val), n_items(splits.test)) == (1149, 288, 360)
    x, y = splits.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])

    target = load_digits().target
    for split, indices in zip((splits.train, splits.val, splits.test), digits_indices(), strict=True):
        assert [split[i][1] for i in range(n_items(split))] == target[indices].tolist()
    test_counts = np.bincount([splits.test[i][1] for i in range(360)])
    assert test_counts.min() >= 35 and test_counts.max() <= 37


def test_digits_native_size_keeps_pixels_with_their_labels() -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    splits = load_dataset("digits", image_size=8)
    for split, indices in zip((splits.train, splits.val, splits.test), digits_indices(), strict=True):
        got = torch.stack([split[i][0][0] for i in range(n_items(split))]).numpy().ravel()
        assert np.corrcoef(got, bunch.images[indices].ravel())[0, 1] > 0.9999
    assert splits.val[0][0].shape == (3, 8, 8)


# ---------------------------------------------------------------- mnist / fashion-mnist


@pytest.mark.parametrize("prefix", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_loads(tmp_path: Path, prefix: str, gz: bool) -> None:
    root = make_idx_dir(tmp_path / "idx", gz=gz)
    splits = load_dataset(f"{prefix}:{root}", image_size=16)
    assert (
        splits.name == f"{prefix}:{root}" and splits.num_classes == 10 and splits.input_shape == (3, 16, 16)
    )
    assert (n_items(splits.train), n_items(splits.val), n_items(splits.test)) == (40, 10, 20)
    assert sorted(splits.val[i][1] for i in range(10)) == list(range(10))  # stratified: one per class
    for dataset in (splits.train, splits.val, splits.test):
        assert_labels_encoded(dataset, 16)
    x, _ = splits.test[3]
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert [splits.test[i][1] for i in range(20)] == (np.arange(20) % 10).tolist()


def test_idx_holdout_is_ten_percent_and_fixed(tmp_path: Path) -> None:
    root = make_idx_dir(tmp_path / "idx", n_train=200)
    a, b = load_dataset(f"mnist:{root}"), load_dataset(f"mnist:{root}")
    assert (n_items(a.train), n_items(a.val)) == (180, 20)
    assert np.bincount([a.val[i][1] for i in range(20)]).tolist() == [2] * 10
    assert all(torch.equal(a.train[i][0], b.train[i][0]) for i in range(0, 180, 7))
    assert_labels_encoded(a.train, 32)


def _drop(name: str) -> Callable[[Path], None]:
    return lambda root: (root / name).unlink()


def _rewrite(name: str, array: np.ndarray, magic: int, count: int | None = None) -> Callable[[Path], None]:
    return lambda root: write_idx(root / name, array, magic=magic, count=count)


def _truncate_gz(name: str) -> Callable[[Path], None]:
    def cut(root: Path) -> None:
        data = (root / name).read_bytes()
        (root / name).write_bytes(data[: len(data) // 2])

    return cut


LABELS = np.arange(50) % 10


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (_drop("t10k-labels-idx1-ubyte.gz"), "t10k-labels-idx1-ubyte"),
        (_rewrite("train-images-idx3-ubyte.gz", encoded_images(LABELS, (28, 28)), 2049), "magic number 2049"),
        (_rewrite("train-labels-idx1-ubyte.gz", LABELS, 2051), "train-labels-idx1-ubyte.gz"),
        (_truncate_gz("train-images-idx3-ubyte.gz"), "train-images-idx3-ubyte.gz"),
        (_rewrite("t10k-images-idx3-ubyte.gz", encoded_images(LABELS, (28, 28)), 2051, 60), "needs"),
        (_rewrite("train-images-idx3-ubyte.gz", encoded_images(LABELS, (28, 28)), 2051, 40), "needs"),
        (_rewrite("train-labels-idx1-ubyte.gz", LABELS[:49], 2049), "49 labels"),
        (_rewrite("train-labels-idx1-ubyte.gz", LABELS + 5, 2049), "label 14"),
        (lambda root: (root / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all"), "t10k-images"),
    ],
    ids=[
        "missing",
        "image-magic",
        "label-magic",
        "truncated-gz",
        "short-data",
        "extra-data",
        "count",
        "label-range",
        "not-gz",
    ],
)
def test_idx_bad_files(tmp_path: Path, damage: Callable[[Path], None], needle: str) -> None:
    root = make_idx_dir(tmp_path / "idx")
    damage(root)
    assert_one_line_error(f"fashion-mnist:{root}", needle, "fashion-mnist")


def test_truncated_raw_idx(tmp_path: Path) -> None:
    root = make_idx_dir(tmp_path / "idx", gz=False)
    path = root / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    assert_one_line_error(f"mnist:{root}", "train-images-idx3-ubyte", "replace it")


# ---------------------------------------------------------------- cifar10


@pytest.mark.parametrize("nested", [False, True])
def test_cifar_loads(tmp_path: Path, nested: bool) -> None:
    make_cifar_dir(tmp_path / "cifar-10-batches-py" if nested else tmp_path)
    splits = load_dataset(f"cifar10:{tmp_path}")
    assert splits.num_classes == 10 and splits.input_shape == (3, 32, 32)
    assert (n_items(splits.train), n_items(splits.val), n_items(splits.test)) == (40, 10, 10)
    for dataset in (splits.train, splits.val, splits.test):
        assert_labels_encoded(dataset, 32, channel=0)
    x, _ = splits.train[0]
    assert not torch.equal(x[0], x[1])
    assert torch.count_nonzero(x[1:]) == 0  # constant green/blue: centred, never mixed with red
    assert [splits.test[i][1] for i in range(10)] == list(range(9, -1, -1))


def test_cifar_resizes(tmp_path: Path) -> None:
    splits = load_dataset(f"cifar10:{make_cifar_dir(tmp_path)}", image_size=24)
    assert splits.input_shape == (3, 24, 24)
    assert_labels_encoded(splits.val, 24)


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda root: (root / "data_batch_3").unlink(), "data_batch_3"),
        (lambda root: (root / "test_batch").write_bytes(b"\x80\x04garbage"), "test_batch"),
        (lambda root: (root / "data_batch_2").write_bytes(pickle.dumps({b"labels": [1]})), "data_batch_2"),
        (
            lambda root: (root / "data_batch_1").write_bytes(
                pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
            ),
            "data_batch_1",
        ),
    ],
    ids=["missing", "garbage", "no-data", "bad-shape"],
)
def test_cifar_bad_files(tmp_path: Path, damage: Callable[[Path], None], needle: str) -> None:
    root = make_cifar_dir(tmp_path / "c")
    damage(root)
    assert_one_line_error(f"cifar10:{root}", needle)


# ---------------------------------------------------------------- imagefolder


def _level(name: str) -> float:
    return (CLASS_LEVELS[name] / 255 - 0.5) / 0.5


def test_imagefolder_with_val_and_test(tmp_path: Path) -> None:
    make_imagefolder(tmp_path, {"train": ALL3, "val": ALL3, "test": ALL3}, per_class=2)
    splits = load_dataset(f"imagefolder:{tmp_path}", image_size=16)
    assert splits.num_classes == 3 and splits.input_shape == (3, 16, 16)
    assert (n_items(splits.train), n_items(splits.val), n_items(splits.test)) == (6, 6, 6)
    for dataset in (splits.train, splits.val, splits.test):
        for i in range(6):
            x, y = dataset[i]
            assert x.shape == (3, 16, 16) and x.dtype == torch.float32
            assert torch.allclose(x, torch.full_like(x, _level(ALL3[y])), atol=1e-5)


@pytest.mark.parametrize(
    ("layout", "sizes"),
    [
        ({"train": ALL3}, (24, 3, 3)),  # test 10 % of train/, val 10 % of the rest
        ({"train": ALL3, "val": ALL3}, (27, 6, 3)),  # test 10 % of train/
        ({"train": ALL3, "test": ALL3}, (27, 3, 6)),  # val 10 % of train/
    ],
    ids=["train-only", "train-val", "train-test"],
)
def test_imagefolder_holdouts(
    tmp_path: Path, layout: dict[str, tuple[str, ...]], sizes: tuple[int, int, int]
) -> None:
    make_imagefolder(tmp_path, {"train": layout["train"]}, per_class=10)
    make_imagefolder(tmp_path, {k: v for k, v in layout.items() if k != "train"}, per_class=2)
    splits = load_dataset(f"imagefolder:{tmp_path}")
    assert (n_items(splits.train), n_items(splits.val), n_items(splits.test)) == sizes
    for dataset in (splits.train, splits.val, splits.test):
        labels = [dataset[i][1] for i in range(n_items(dataset))]
        assert np.bincount(labels).tolist() == [len(labels) // 3] * 3  # stratified
        x, y = dataset[len(labels) - 1]
        assert torch.allclose(x, torch.full_like(x, _level(ALL3[y])), atol=1e-5)


def test_imagefolder_bad_image_is_a_data_error(tmp_path: Path) -> None:
    make_imagefolder(tmp_path, {"train": ALL3, "val": ALL3, "test": ALL3}, per_class=1)
    (tmp_path / "train" / "ant" / "0.png").write_bytes(b"not a png")
    splits = load_dataset(f"imagefolder:{tmp_path}")
    with pytest.raises(DataError, match=r"0\.png"):
        splits.train[0]


@pytest.mark.parametrize(
    ("layout", "needle"),
    [
        ({"train": ALL3, "val": ("ant", "bee")}, "same class folders"),
        ({"train": ALL3, "test": ("ant", "bee", "cat", "dog")}, "same class folders"),
        ({"val": ALL3}, "no train/ folder"),
    ],
    ids=["val-mismatch", "test-mismatch", "no-train"],
)
def test_imagefolder_bad_layout(tmp_path: Path, layout: dict[str, tuple[str, ...]], needle: str) -> None:
    make_imagefolder(tmp_path, layout, per_class=1)
    assert_one_line_error(f"imagefolder:{tmp_path}", needle)


def test_imagefolder_empty_train(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    assert_one_line_error(f"imagefolder:{tmp_path}", "train", "lay out DIR")


@pytest.mark.parametrize(
    ("layout", "needle"),
    [
        ({"train": ("ant", "bee")}, "too few to hold out validation and test splits"),
        ({"train": ("ant",), "val": ("ant",)}, "too few to hold out a test split"),
        ({"train": ("ant",), "test": ("ant",)}, "too few to hold out a validation split"),
    ],
    ids=["train-only", "train-val", "train-test"],
)
def test_imagefolder_too_few_to_hold_out(
    tmp_path: Path, layout: dict[str, tuple[str, ...]], needle: str
) -> None:
    make_imagefolder(tmp_path, layout, per_class=1)
    assert_one_line_error(f"imagefolder:{tmp_path}", needle, "add training images")


# ---------------------------------------------------------------- bad specs


@pytest.mark.parametrize(
    ("spec", "needles"),
    [
        ("nope", ("unknown dataset", "digits", "fashion-mnist:DIR", "imagefolder:DIR")),
        ("mnist", ("mnist:DIR",)),
        ("cifar10:", ("cifar10:DIR",)),
        ("digits:/tmp", ("takes no directory",)),
        ("fashion-mnist:/no/such/dir", ("does not exist", "/no/such/dir", "train-images-idx3-ubyte.gz")),
        ("imagefolder:/no/such/dir", ("does not exist", "imagefolder:DIR")),
        ("cifar10:/no/such/dir", ("does not exist", "data_batch_1")),
    ],
)
def test_bad_specs(spec: str, needles: tuple[str, ...]) -> None:
    assert_one_line_error(spec, *needles)


def test_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    assert_one_line_error(f"mnist:{tmp_path / 'f'}", "not a directory")


@pytest.mark.parametrize("size", [7, 0, -3])
def test_image_size_too_small(size: int) -> None:
    assert_one_line_error("digits", "at least 8", image_size=size)
