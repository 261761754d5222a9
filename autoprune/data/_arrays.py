"""In-memory uint8 image datasets (digits, MNIST, Fashion-MNIST, CIFAR-10) and the splits built from them.

Images are resized once at load time and kept as uint8 (N, C, S, S); each item is converted to float32
and normalised with the per-channel mean/std of the train split, so a 60k-image set stays ~60 MB.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as nnf
from torch import Tensor
from torch.utils.data import Dataset

from autoprune.data._common import holdout_indices, train_val_test_indices
from autoprune.data._registry import DatasetSplits, Sample

_CHUNK = 2048


class ArrayDataset(Dataset[Sample]):
    """uint8 images (N, C, S, S) with int labels; items are normalised float32 [3, S, S] and an int."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, mean: Tensor, std: Tensor) -> None:
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be uint8 (N, 1|3, S, S), got {images.dtype} {images.shape}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = np.asarray(labels, dtype=np.int64)
        self.mean = mean.reshape(-1, 1, 1).float()
        self.std = std.reshape(-1, 1, 1).float()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Sample:
        x = self.images[index].float().div_(255.0).sub_(self.mean).div_(self.std)
        if x.shape[0] == 1:
            x = x.expand(3, -1, -1)
        return x, int(self.labels[index])


def resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinearly resize uint8 (N, C, H, W) to (N, C, size, size) in float chunks, rounding back to uint8."""
    n, c, h, w = images.shape
    if (h, w) == (size, size):
        return images
    out = np.empty((n, c, size, size), dtype=np.uint8)
    antialias = size < max(h, w)
    with torch.no_grad():
        for start in range(0, n, _CHUNK):
            chunk = torch.from_numpy(images[start : start + _CHUNK]).float()
            resized = nnf.interpolate(
                chunk, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias
            )
            out[start : start + _CHUNK] = resized.round_().clamp_(0, 255).to(torch.uint8).numpy()
    return out


def channel_stats(images: np.ndarray) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std of uint8 (N, C, S, S) images on the [0, 1] scale, summed in chunks."""
    c = images.shape[1]
    total = np.zeros(c, dtype=np.float64)
    squares = np.zeros(c, dtype=np.float64)
    for start in range(0, len(images), _CHUNK):
        chunk = images[start : start + _CHUNK].astype(np.float64) / 255.0
        total += chunk.sum(axis=(0, 2, 3))
        squares += np.square(chunk).sum(axis=(0, 2, 3))
    count = max(len(images) * images.shape[2] * images.shape[3], 1)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    std[std < 1e-6] = 1.0  # constant images: only centre them
    return torch.from_numpy(mean).float(), torch.from_numpy(std).float()


def array_splits(
    prefix: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray] | None,
    *,
    num_classes: int,
    image_size: int,
    val_fraction: float,
    test_fraction: float | None = None,
    augment_fits: bool = False,
) -> DatasetSplits:
    """Resize (images uint8 (N, C, H, W), labels) pairs into train/val/test splits and wrap them.

    A shipped ``test`` pair is used as is and val is a fixed stratified ``val_fraction`` of ``train``;
    without one, test is a fixed stratified ``test_fraction`` of ``train`` and val ``val_fraction`` of
    the rest. Every split is normalised with the statistics of the final train split alone.
    ``augment_fits``: whether crop + flip suits the images (``DatasetSplits.augment_fits``).
    """
    what = f"{prefix} training set"
    images, labels = resize_uint8(train[0], image_size), train[1]
    if test is not None:
        train_idx, val_idx = holdout_indices(labels, fraction=val_fraction, what=what)
        test_images, test_labels = resize_uint8(test[0], image_size), test[1]
    elif test_fraction is None:
        raise ValueError(f"{prefix}: a dataset without a test split needs a test_fraction")
    else:
        train_idx, val_idx, test_idx = train_val_test_indices(
            labels, val_fraction=val_fraction, test_fraction=test_fraction, what=what
        )
        test_images, test_labels = images[test_idx], labels[test_idx]
    train_images = images[train_idx]
    mean, std = channel_stats(train_images)
    return DatasetSplits(
        name=prefix,
        train=ArrayDataset(train_images, labels[train_idx], mean=mean, std=std),
        val=ArrayDataset(images[val_idx], labels[val_idx], mean=mean, std=std),
        test=ArrayDataset(test_images, test_labels, mean=mean, std=std),
        num_classes=num_classes,
        input_shape=(3, image_size, image_size),
        augment_fits=augment_fits,
    )
