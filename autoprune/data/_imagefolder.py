"""``imagefolder:DIR``: ``DIR/train/<class>/*.png|jpg...`` plus optional ``DIR/val`` and ``DIR/test``.

Images are decoded lazily per item (RGB, resized to S x S) and normalised with a fixed mean = std = 0.5
per channel, because per-dataset statistics would mean decoding every training image up front.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch.utils.data import Dataset, Subset

from autoprune.data._common import existing_dir, holdout_indices, one_line, train_val_test_indices
from autoprune.data._registry import DatasetSplits, Sample, register_dataset
from autoprune.errors import DataError

if TYPE_CHECKING:  # torchvision and PIL load lazily: importing them costs ~1 s
    from PIL.Image import Image
    from torchvision.datasets import ImageFolder

VAL_FRACTION = 0.1
TEST_FRACTION = 0.1
MEAN_STD = 0.5
_LAYOUT = "train/<class>/<images> (and optionally val/ and test/ with the same class folders)"


def _load_rgb(path: str) -> Image:
    """Open one image as RGB; an unreadable file is a DataError naming it, even mid-training."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as err:  # includes PIL.UnidentifiedImageError and truncated files
        raise DataError(
            f"imagefolder: cannot read image '{path}' ({one_line(err)}): remove or replace it"
        ) from err


def _folder(root: Path, split: str, transform: Callable[[Any], Any]) -> ImageFolder:
    """An ImageFolder over ``root/split``; an empty or class-less folder is a DataError."""
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(root / split), transform=transform, loader=_load_rgb)
    except OSError as err:  # FileNotFoundError: no class folders, or no image files in them
        raise DataError(
            f"imagefolder: '{root / split}' has no usable class folders ({one_line(err)}): "
            f"lay out DIR as {_LAYOUT}"
        ) from err


def _splits(
    full_train: ImageFolder, shipped: dict[str, ImageFolder], *, what: str
) -> tuple[Dataset[Sample], Dataset[Sample], Dataset[Sample]]:
    """(train, val, test): shipped val/test folders as they are, the missing ones held out of train."""
    if "val" in shipped and "test" in shipped:
        return full_train, shipped["val"], shipped["test"]
    labels = full_train.targets
    if "test" in shipped:
        train_idx, val_idx = holdout_indices(labels, fraction=VAL_FRACTION, what=what)
        return _subset(full_train, train_idx), _subset(full_train, val_idx), shipped["test"]
    if "val" in shipped:
        train_idx, test_idx = holdout_indices(labels, fraction=TEST_FRACTION, what=what, held="test")
        return _subset(full_train, train_idx), shipped["val"], _subset(full_train, test_idx)
    train_idx, val_idx, test_idx = train_val_test_indices(
        labels, val_fraction=VAL_FRACTION, test_fraction=TEST_FRACTION, what=what
    )
    return _subset(full_train, train_idx), _subset(full_train, val_idx), _subset(full_train, test_idx)


def _subset(folder: ImageFolder, indices: np.ndarray) -> Dataset[Sample]:
    """The items of ``folder`` at ``indices`` (sorted), as a sized torch Subset."""
    return Subset(folder, indices.tolist())


@register_dataset("imagefolder", takes_dir=True)
def load_imagefolder(root: Path, *, image_size: int) -> DatasetSplits:
    """val = DIR/val and test = DIR/test; a missing one is a fixed stratified hold-out of DIR/train.

    Without test/, test = 10 % of train/; without val/, val = 10 % of what train/ has left.
    """
    from torchvision import transforms

    existing_dir("imagefolder", root, holding=_LAYOUT)
    if not (root / "train").is_dir():
        raise DataError(f"imagefolder: '{root}' has no train/ folder: lay out DIR as {_LAYOUT}")
    transform = transforms.Compose(
        [
            transforms.Resize((image_size, image_size)),
            transforms.ToTensor(),
            transforms.Normalize([MEAN_STD] * 3, [MEAN_STD] * 3),
        ]
    )
    full_train = _folder(root, "train", transform)
    splits: dict[str, ImageFolder] = {}
    for split in ("val", "test"):
        if (root / split).is_dir():
            splits[split] = _folder(root, split, transform)
            if splits[split].classes != full_train.classes:
                raise DataError(
                    f"imagefolder: '{root / split}' has classes {splits[split].classes} but "
                    f"'{root / 'train'}' has {full_train.classes}: give both the same class folders"
                )
    train, val, test = _splits(full_train, splits, what=f"imagefolder '{root / 'train'}'")
    return DatasetSplits(
        name="imagefolder",
        train=train,
        val=val,
        test=test,
        num_classes=len(full_train.classes),
        input_shape=(3, image_size, image_size),
        augment_fits=True,  # photos, by assumption; --no-augment for images a flip changes
    )
