"""``autoprune train``: the dense model, resumable after every epoch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from autoprune import training
from autoprune._console import Reporter
from autoprune._io import atomic_write
from autoprune._killpoint import kill_point
from autoprune.config import TrainConfig
from autoprune.data import load_dataset
from autoprune.errors import ConfigError
from autoprune.models import check_forward, create_model, save_checkpoint

_SILENT = Reporter()


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    val_accuracy: float


def state_path(out: str | Path) -> Path:
    """Where ``train`` keeps its state between epochs: ``OUT.state.pt`` beside the checkpoint ``OUT``."""
    out = Path(out)
    return out.with_name(f"{out.name}.state.pt")


def train(
    model: str,
    *,
    data: str = "digits",
    out: str | Path,
    config: TrainConfig = TrainConfig(),
    image_size: int = 32,
    reporter: Reporter = _SILENT,
) -> TrainResult:
    """Train the dense model on ``data``; save weights plus what they were trained on (``augment``
    resolved to what ran). After every epoch the whole training state goes to ``state_path(out)``, so
    the same call after a crash continues from the last complete epoch and ends as an uninterrupted run
    would; a call with other settings is refused while that file exists. It is deleted once ``out`` is
    written."""
    ds = load_dataset(data, image_size=image_size)
    augment = training.resolve_augment(config.augment, ds)
    resolved = dataclasses.replace(config, augment=augment).to_dict()
    settings = {"model": model, "data": data, "image_size": image_size, "train": resolved}
    keep = state_path(out)
    saved = _read_state(keep, settings)
    if saved is not None:
        reporter.log(f"resuming {model} from {keep} (step {saved['step']} of {saved['total']})")

    def save_state(state: training.TrainState) -> None:
        atomic_write(keep, lambda p: torch.save({"settings": settings, **state}, p))
        kill_point("train:epoch")  # tests: killed with an epoch's state saved

    with torch.random.fork_rng(devices=[]):  # the seed fixes the initial weights and any dropout
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
            augment=augment,
            on_epoch=save_state,
            state=saved,
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
        train=resolved,
    )
    keep.unlink(missing_ok=True)
    return TrainResult(Path(out), acc)


def _read_state(path: Path, settings: dict[str, Any]) -> training.TrainState | None:
    """The state a killed run with these ``settings`` left at ``path``; None when there is none."""
    if not path.is_file():
        return None
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("settings") != settings:
        raise ConfigError(
            f"'{path}' holds an unfinished train run with other settings: rerun it with those, pass a "
            f"new --out, or delete '{path}'"
        )
    return state
