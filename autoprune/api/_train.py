"""``autoprune train``: the dense model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from autoprune import training
from autoprune._console import Reporter
from autoprune.config import TrainConfig
from autoprune.data import load_dataset
from autoprune.models import check_forward, create_model, save_checkpoint

_SILENT = Reporter()


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    val_accuracy: float


def train(
    model: str,
    *,
    data: str = "digits",
    out: str | Path,
    config: TrainConfig = TrainConfig(),
    image_size: int = 32,
    reporter: Reporter = _SILENT,
) -> TrainResult:
    """Train the dense model on ``data``; save weights plus what they were trained on."""
    ds = load_dataset(data, image_size=image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = create_model(model, num_classes=ds.num_classes)
    check_forward(net, model, [1, *ds.input_shape])
    training.train(
        net,
        ds.train,
        epochs=config.epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        weight_decay=config.weight_decay,
        seed=config.seed,
        on_step=reporter.task(f"train {model}"),
    )
    acc = training.evaluate(net, ds.val)
    save_checkpoint(
        out,
        net,
        model=model,
        num_classes=ds.num_classes,
        input_shape=[1, *ds.input_shape],
        data=data,
        val_accuracy=acc,
        train=config.to_dict(),
    )
    return TrainResult(Path(out), acc)
