"""The dataset registry: spec strings ("digits", "mnist:DIR") resolved to loaders that build splits.

Loaded splits are kept in a small in-process LRU cache, because one process (train then search, a
notebook, the tests) often loads the same dataset again and decoding plus resizing it costs seconds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from torch import Tensor
from torch.utils.data import Dataset

from autoprune.errors import DataError

Sample = tuple[Tensor, int]
F = TypeVar("F", bound=Callable[..., "DatasetSplits"])

MIN_IMAGE_SIZE = 8
CACHE_SIZE = 4
"""How many loaded datasets the cache keeps (least recently used out first): each can be ~100 MB."""


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset's train/val/test splits; items are (float32 [3, S, S] image, int label), all sized.

    The three are pairwise disjoint; a split the dataset does not ship is a fixed stratified hold-out
    of its training data. Loads may share one object (see ``load_dataset``): treat it as read-only.
    """

    name: str  # the spec it was loaded from, e.g. "digits" or "mnist:/data/mnist"
    train: Dataset[Sample]
    val: Dataset[Sample]  # for model selection: a fixed hold-out unless the dataset ships one
    test: Dataset[Sample]  # evaluated once per final model: shipped, or a fixed hold-out of train
    num_classes: int
    input_shape: tuple[int, int, int]  # (3, S, S)
    # Whether random crop + horizontal flip suits the images (natural photos: yes; digits, letters and
    # clothing, which flips or shifts can turn into another class or out of the frame: no).
    augment_fits: bool = False


@dataclass(frozen=True)
class _Entry:
    loader: Callable[..., DatasetSplits]
    takes_dir: bool


_LOADERS: dict[str, _Entry] = {}
_CACHE: OrderedDict[tuple[Any, ...], tuple[str | None, DatasetSplits]] = OrderedDict()
"""(prefix, loader, resolved directory, image size) -> (directory signature, splits), oldest first."""


def register_dataset(prefix: str, *, takes_dir: bool) -> Callable[[F], F]:
    """Register a loader for ``prefix`` (``prefix:DIR`` specs when ``takes_dir``); returns it unchanged.

    It is called as ``fn(Path(DIR), image_size=S)`` or ``fn(image_size=S)`` and raises DataError itself.
    """
    if not prefix or ":" in prefix:
        raise ValueError(f"dataset prefix must be non-empty and contain no ':', got {prefix!r}")

    def decorate(fn: F) -> F:
        if prefix in _LOADERS:
            raise ValueError(f"dataset prefix {prefix!r} is already registered")
        _LOADERS[prefix] = _Entry(fn, takes_dir)
        return fn

    return decorate


def list_datasets() -> list[str]:
    """The accepted spec forms, sorted, e.g. ``["cifar10:DIR", "digits", ...]``."""
    return sorted(f"{p}:DIR" if e.takes_dir else p for p, e in _LOADERS.items())


def load_dataset(spec: str, *, image_size: int = 32) -> DatasetSplits:
    """Load the dataset named by ``spec`` with images resized to ``image_size`` squared.

    A repeat load of the same dataset, directory and size returns the cached DatasetSplits object
    itself while the directory's files keep their names, sizes and mtimes; a change reloads them.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
        raise DataError(
            f"image size must be an integer of at least {MIN_IMAGE_SIZE}, got {image_size!r}: "
            f"pass a larger image size"
        )
    prefix, has_colon, directory = spec.partition(":")
    entry = _LOADERS.get(prefix)
    if entry is None:
        raise DataError(f"unknown dataset {spec!r}: pass one of {', '.join(list_datasets())}")
    if entry.takes_dir and not directory:
        raise DataError(f"dataset {prefix!r} needs a directory: pass it as {prefix}:DIR")
    if not entry.takes_dir and has_colon:
        raise DataError(f"dataset {prefix!r} takes no directory, got {spec!r}: pass it as {prefix}")
    root = Path(directory).expanduser() if entry.takes_dir else None
    key = (prefix, entry.loader, None if root is None else str(root.resolve()), image_size)
    signature = None if root is None else _dir_signature(root)
    cached = _CACHE.get(key)
    if cached is not None and cached[0] == signature:
        _CACHE.move_to_end(key)
        splits = cached[1]
    else:
        loaded = (
            entry.loader(image_size=image_size) if root is None else entry.loader(root, image_size=image_size)
        )
        splits = dataclasses.replace(loaded, name=spec)
        _CACHE[key] = (signature, splits)
        _CACHE.move_to_end(key)
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return splits if splits.name == spec else dataclasses.replace(splits, name=spec)


def clear_cache() -> None:
    """Forget every cached dataset, e.g. to free its memory; the next load reads the files again."""
    _CACHE.clear()


def _dir_signature(root: Path) -> str | None:
    """A digest of (relative path, size, mtime) of every file under ``root``, links followed once.

    A file added, removed, resized or rewritten changes it, so the cache reloads; None if ``root`` is
    not a directory (the loader then raises its own DataError).
    """
    if not root.is_dir():
        return None
    digest = hashlib.blake2b(digest_size=16)
    seen: set[tuple[int, int]] = set()
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            info = folder.stat()
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:  # unreadable: the loader reports it if it matters
            continue
        if (info.st_dev, info.st_ino) in seen:  # a symlink loop
            continue
        seen.add((info.st_dev, info.st_ino))
        for item in entries:
            relative = os.path.relpath(item.path, root)
            try:
                if item.is_dir():  # named too: an empty class folder changes what a loader does
                    pending.append(Path(item.path))
                    digest.update(f"{relative}/\n".encode())
                    continue
                stat = item.stat()
            except OSError:  # a broken link
                continue
            digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
