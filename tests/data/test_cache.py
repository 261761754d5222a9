"""load_dataset caches loaded splits in process: counted loader calls, never the clock."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from autoprune.data import DatasetSplits, _registry, load_dataset, register_dataset
from autoprune.data._arrays import ArrayDataset
from autoprune.errors import DataError


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[tuple[Path, int]]:
    """Register a "toy:DIR" loader over ``tmp_path`` (holding one file); returns its calls."""
    monkeypatch.setattr(_registry, "_LOADERS", dict(_registry._LOADERS))
    calls: list[tuple[Path, int]] = []

    @register_dataset("toy", takes_dir=True)
    def load_toy(root: Path, *, image_size: int) -> DatasetSplits:
        calls.append((root, image_size))
        if (root / "broken").exists():
            raise DataError("toy: 'broken' is there: remove it")
        images = np.zeros((4, 1, image_size, image_size), dtype=np.uint8)
        split = ArrayDataset(images, np.arange(4) % 2, mean=torch.zeros(1), std=torch.ones(1))
        return DatasetSplits("toy", split, split, split, 2, (3, image_size, image_size))

    (tmp_path / "a.bin").write_bytes(b"abc")
    return calls


def test_a_repeat_load_is_the_cached_object(toy: list[tuple[Path, int]], tmp_path: Path) -> None:
    first = load_dataset(f"toy:{tmp_path}", image_size=8)
    assert load_dataset(f"toy:{tmp_path}", image_size=8) is first
    assert len(toy) == 1 and first.name == f"toy:{tmp_path}"
    other_text = load_dataset(f"toy:{tmp_path}/./", image_size=8)  # same folder, spelled otherwise
    assert len(toy) == 1 and other_text.name == f"toy:{tmp_path}/./" and other_text.train is first.train
    assert load_dataset(f"toy:{tmp_path}", image_size=8) is first


def test_another_image_size_loads_again(toy: list[tuple[Path, int]], tmp_path: Path) -> None:
    small = load_dataset(f"toy:{tmp_path}", image_size=8)
    large = load_dataset(f"toy:{tmp_path}", image_size=12)
    assert [size for _, size in toy] == [8, 12] and large.input_shape == (3, 12, 12)
    assert load_dataset(f"toy:{tmp_path}", image_size=8) is small and len(toy) == 2


def _write_nested(path: Path) -> None:
    path.parent.mkdir()
    path.write_bytes(b"1")


@pytest.mark.parametrize(
    "change",
    [
        lambda root: (root / "b.bin").write_bytes(b""),  # a file added
        lambda root: (root / "a.bin").unlink(),  # removed
        lambda root: (root / "a.bin").rename(root / "c.bin"),  # renamed
        lambda root: (root / "a.bin").write_bytes(b"abcd"),  # resized
        lambda root: os.utime(root / "a.bin", ns=(0, 10**9)),  # rewritten in place: mtime only
        lambda root: (root / "sub").mkdir(),  # an (empty) folder added
        lambda root: _write_nested(root / "sub" / "x"),  # a file added in a subfolder
    ],
    ids=["added", "removed", "renamed", "resized", "mtime", "empty-dir", "nested"],
)
def test_a_changed_directory_loads_again(
    toy: list[tuple[Path, int]], tmp_path: Path, change: Callable[[Path], object]
) -> None:
    first = load_dataset(f"toy:{tmp_path}", image_size=8)
    change(tmp_path)
    second = load_dataset(f"toy:{tmp_path}", image_size=8)
    assert len(toy) == 2 and second is not first
    assert load_dataset(f"toy:{tmp_path}", image_size=8) is second and len(toy) == 2


def test_errors_are_not_cached(toy: list[tuple[Path, int]], tmp_path: Path) -> None:
    (tmp_path / "broken").write_bytes(b"")
    for _ in range(2):
        with pytest.raises(DataError):
            load_dataset(f"toy:{tmp_path}", image_size=8)
    assert len(toy) == 2
    (tmp_path / "broken").unlink()
    assert load_dataset(f"toy:{tmp_path}", image_size=8).num_classes == 2 and len(toy) == 3


def test_the_cache_keeps_the_most_recent_few(toy: list[tuple[Path, int]], tmp_path: Path) -> None:
    sizes = [8 + i for i in range(_registry.CACHE_SIZE + 1)]
    for size in sizes:
        load_dataset(f"toy:{tmp_path}", image_size=size)
    assert len(_registry._CACHE) == _registry.CACHE_SIZE
    load_dataset(f"toy:{tmp_path}", image_size=sizes[-1])  # still cached
    load_dataset(f"toy:{tmp_path}", image_size=sizes[0])  # dropped first, so loaded again
    assert [size for _, size in toy] == [*sizes, sizes[0]]


def test_clear_cache_forgets(toy: list[tuple[Path, int]], tmp_path: Path) -> None:
    first = load_dataset(f"toy:{tmp_path}", image_size=8)
    _registry.clear_cache()
    assert load_dataset(f"toy:{tmp_path}", image_size=8) is not first and len(toy) == 2


def test_digits_twice_is_one_object() -> None:
    first = load_dataset("digits", image_size=8)
    assert load_dataset("digits", image_size=8) is first
    assert load_dataset("digits", image_size=9) is not first
