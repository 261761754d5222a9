"""The dataset registry: spec strings ("digits", "mnist:DIR") resolved to loaders that build splits."""

from __future__ import annotations

import dataclasses
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


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset's train/val/test splits; items are (float32 [3, S, S] image, int label), all sized."""

    name: str  # the spec it was loaded from, e.g. "digits" or "mnist:/data/mnist"
    train: Dataset[Sample]
    val: Dataset[Sample]  # for model selection: a fixed hold-out unless the dataset ships one
    test: Dataset[Sample] | None  # evaluated once per final model; None when the dataset has none
    num_classes: int
    input_shape: tuple[int, int, int]  # (3, S, S)


@dataclass(frozen=True)
class _Entry:
    loader: Callable[..., DatasetSplits]
    takes_dir: bool


_LOADERS: dict[str, _Entry] = {}


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
    """Load the dataset named by ``spec`` with images resized to ``image_size`` squared."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
        raise DataError(
            f"image size must be an integer of at least {MIN_IMAGE_SIZE}, got {image_size!r}: "
            f"pass a larger image size"
        )
    prefix, has_colon, directory = spec.partition(":")
    entry = _LOADERS.get(prefix)
    if entry is None:
        raise DataError(f"unknown dataset {spec!r}: pass one of {', '.join(list_datasets())}")
    splits: DatasetSplits
    kwargs: dict[str, Any] = {"image_size": image_size}
    if entry.takes_dir:
        if not directory:
            raise DataError(f"dataset {prefix!r} needs a directory: pass it as {prefix}:DIR")
        splits = entry.loader(Path(directory).expanduser(), **kwargs)
    else:
        if has_colon:
            raise DataError(f"dataset {prefix!r} takes no directory, got {spec!r}: pass it as {prefix}")
        splits = entry.loader(**kwargs)
    return dataclasses.replace(splits, name=spec)
