"""Tests for autoprune.data: the bundled digits set and tiny synthetic IDX, CIFAR and imagefolder fixtures."""

from __future__ import annotations

import gzip
import pickle
import struct
from collections.abc import Callable, Sized
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from autoprune.data import DatasetSplits, _registry, list_datasets, load_dataset, register_dataset
from autoprune.errors import DataError


def n_items(dataset: Dataset | None) -> int:
    """``len(dataset)``, checking that the split is a sized Dataset (every split must support len)."""
    assert isinstance(dataset, Dataset) and isinstance(dataset, Sized)
    return len(dataset)


def pixel_for(label: int) -> int:
    """The constant grey level that encodes ``label`` in the synthetic images."""
    return 20 * label + 10


def encoded_images(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """uint8 images of ``shape`` per item whose every pixel is ``pixel_for(label)``."""
    values = np.array([pixel_for(int(y)) for y in labels], dtype=np.uint8)
    return np.broadcast_to(values.reshape(-1, *([1] * len(shape))), (len(labels), *shape)).copy()


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


def make_idx_dir(root: Path, *, gz: bool = True, n_train: int = 50, n_test: int = 20) -> Path:
    """A tiny MNIST-style folder: 28x28 images whose grey level encodes their label 0..9."""
    root.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        write_idx(root / f"{split}-images-idx3-ubyte{ext}", encoded_images(labels, (28, 28)), magic=2051)
        write_idx(root / f"{split}-labels-idx1-ubyte{ext}", labels, magic=2049)
    return root


def write_cifar_batch(path: Path, labels: np.ndarray) -> None:
    """A CIFAR-10 pickle batch: red encodes the label, green is 5 and blue 250 everywhere."""
    images = np.empty((len(labels), 3, 32, 32), dtype=np.uint8)
    images[:, 0] = encoded_images(labels, (32, 32))
    images[:, 1], images[:, 2] = 5, 250
    batch = {b"data": images.reshape(len(labels), -1), b"labels": [int(y) for y in labels]}
    path.write_bytes(pickle.dumps(batch))


def make_cifar_dir(root: Path) -> Path:
    """Five train batches of 10 images (one per class) and a 10-image test batch."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        write_cifar_batch(root / f"data_batch_{i}", np.arange(10))
    write_cifar_batch(root / "test_batch", np.arange(10)[::-1])
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


# ---------------------------------------------------------------- registry


def test_list_datasets() -> None:
    assert list_datasets() == ["cifar10:DIR", "digits", "fashion-mnist:DIR", "imagefolder:DIR", "mnist:DIR"]


def test_register_dataset_is_used_and_named_by_spec(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
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


# ---------------------------------------------------------------- digits


def test_digits_shapes_split_and_determinism() -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    first = load_dataset("digits")
    _registry.clear_cache()  # a real second load, not the cached object
    second = load_dataset("digits")
    assert first.name == "digits" and first.num_classes == 10 and first.input_shape == (3, 32, 32)
    assert first.test is None and (n_items(first.train), n_items(first.val)) == (1437, 360)
    x, y = first.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])
    for i in (0, 17, 359):
        assert torch.equal(first.val[i][0], second.val[i][0]) and first.val[i][1] == second.val[i][1]

    target = load_digits().target
    _, val_idx = train_test_split(np.arange(len(target)), test_size=0.2, stratify=target, random_state=0)
    val_labels = [first.val[i][1] for i in range(n_items(first.val))]
    assert val_labels == target[np.sort(val_idx)].tolist()
    assert np.bincount(val_labels).min() >= 35 and np.bincount(val_labels).max() <= 37


def test_digits_native_size_keeps_pixels_with_their_labels() -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    _, val_idx = train_test_split(
        np.arange(len(bunch.target)), test_size=0.2, stratify=bunch.target, random_state=0
    )
    splits = load_dataset("digits", image_size=8)
    got = torch.stack([splits.val[i][0][0] for i in range(n_items(splits.val))]).numpy().ravel()
    want = bunch.images[np.sort(val_idx)].ravel()
    assert np.corrcoef(got, want)[0, 1] > 0.9999
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
    assert splits.test is not None
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
    assert splits.num_classes == 10 and splits.input_shape == (3, 32, 32) and splits.test is not None
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
    assert splits.num_classes == 3 and splits.input_shape == (3, 16, 16) and splits.test is not None
    assert (n_items(splits.train), n_items(splits.val), n_items(splits.test)) == (6, 6, 6)
    for dataset in (splits.train, splits.val, splits.test):
        for i in range(6):
            x, y = dataset[i]
            assert x.shape == (3, 16, 16) and x.dtype == torch.float32
            assert torch.allclose(x, torch.full_like(x, _level(ALL3[y])), atol=1e-5)


def test_imagefolder_holdout_without_val(tmp_path: Path) -> None:
    make_imagefolder(tmp_path, {"train": ALL3}, per_class=10)
    a, b = load_dataset(f"imagefolder:{tmp_path}"), load_dataset(f"imagefolder:{tmp_path}")
    assert a.test is None and (n_items(a.train), n_items(a.val)) == (27, 3)
    assert sorted(a.val[i][1] for i in range(3)) == [0, 1, 2]
    assert [b.val[i][1] for i in range(3)] == [a.val[i][1] for i in range(3)]
    x, y = a.train[5]
    assert torch.allclose(x, torch.full_like(x, _level(ALL3[y])), atol=1e-5)


def test_imagefolder_bad_image_is_a_data_error(tmp_path: Path) -> None:
    make_imagefolder(tmp_path, {"train": ALL3, "val": ALL3}, per_class=1)
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
