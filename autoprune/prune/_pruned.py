"""Pruned networks: built from a dense model and widths, saved as (spec, widths, kept indices, weights)
and rebuilt without any search. The file loads with ``torch.load(weights_only=True)``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoprune import __version__
from autoprune._io import atomic_write
from autoprune.errors import ModelError
from autoprune.graph import Widths, apply_widths, pruned_copy
from autoprune.models import create_model
from autoprune.search import get_criterion

FORMAT = 1


@dataclass
class PrunedModel:
    module: nn.Module
    model_spec: str
    num_classes: int
    input_shape: list[int]
    widths: Widths
    keep: dict[str, list[int]]
    criterion: str
    meta: dict[str, Any] = field(default_factory=dict)


def prune_model(
    dense: nn.Module,
    *,
    widths: Widths,
    model_spec: str,
    num_classes: int,
    input_shape: list[int],
    criterion: str = "l1",
) -> PrunedModel:
    """A physically pruned copy of ``dense``: in each group the channels ``criterion`` ranks highest."""
    example = torch.zeros(1, *input_shape[1:])
    module, keep = pruned_copy(dense, example, widths, criterion=get_criterion(criterion))
    full = {name: len(idx) for name, idx in keep.items()}
    return PrunedModel(module, model_spec, num_classes, list(input_shape), full, keep, criterion)


def save_pruned(path: str | Path, pruned: PrunedModel) -> None:
    payload = {
        "format": FORMAT,
        "autoprune_version": __version__,
        "model": pruned.model_spec,
        "num_classes": pruned.num_classes,
        "input_shape": pruned.input_shape,
        "widths": pruned.widths,
        "keep": pruned.keep,
        "criterion": pruned.criterion,
        "meta": pruned.meta,
        "state_dict": pruned.module.state_dict(),
    }
    atomic_write(path, lambda p: torch.save(payload, p))


def load_pruned(path: str | Path) -> PrunedModel:
    """Rebuild the architecture from the model spec and kept indices, then load the pruned weights."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"pruned model '{path}' does not exist: give a run directory or its pruned.pt")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        spec, keep = payload["model"], payload["keep"]
    except Exception as exc:
        raise ModelError(
            f"'{path}' is not an autoprune pruned model ({type(exc).__name__}): run autoprune search"
        ) from exc
    module = create_model(spec, num_classes=payload["num_classes"]).eval()
    example = torch.zeros(1, *payload["input_shape"][1:])
    apply_widths(module, example, payload["widths"], keep=keep)
    module.load_state_dict(payload["state_dict"])
    return PrunedModel(
        module.eval(),
        spec,
        payload["num_classes"],
        list(payload["input_shape"]),
        dict(payload["widths"]),
        {k: list(v) for k, v in keep.items()},
        payload["criterion"],
        dict(payload.get("meta", {})),
    )
