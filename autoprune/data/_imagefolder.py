"""``imagefolder:DIR``: ``DIR/train/<class>/*.png|jpg...`` plus optional ``DIR/val`` and ``DIR/test``.

Images are decoded lazily per item (RGB, resized to S x S) and normalised with a fixed mean = std = 0.5
per channel, because per-dataset statistics would mean decoding every training image up front.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch.utils.data import Dataset, Subset

from autoprune.data._common import existing_dir, holdout_indices, one_line
from autoprune.data._registry import DatasetSplits, Sample, register_dataset
from autoprune.errors import DataError

if TYPE_CHECKING:  # torchvision and PIL load lazily: importing them costs ~1 s
    from PIL.Image import Image
    from torchvision.datasets import ImageFolder

VAL_FRACTION = 0.1
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


@register_dataset("imagefolder", takes_dir=True)
def load_imagefolder(root: Path, *, image_size: int) -> DatasetSplits:
    """val = DIR/val, else a fixed stratified 10 % hold-out of DIR/train; test = DIR/test or None."""
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
    train: Dataset[Sample] = full_train
    val: Dataset[Sample]
    if "val" in splits:
        val = splits["val"]
    else:
        train_idx, val_idx = holdout_indices(
            full_train.targets, fraction=VAL_FRACTION, what=f"imagefolder '{root / 'train'}'"
        )
        train = Subset(full_train, train_idx.tolist())
        val = Subset(full_train, val_idx.tolist())
    return DatasetSplits(
        name="imagefolder",
        train=train,
        val=val,
        test=splits.get("test"),
        num_classes=len(full_train.classes),
        input_shape=(3, image_size, image_size),
    )
