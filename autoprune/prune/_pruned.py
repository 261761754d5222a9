"""Pruned networks: built from a dense model and widths, saved as (spec, widths, kept indices, weights)
and rebuilt without any search. The file loads with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from autoprune import __version__
from autoprune._io import atomic_write
from autoprune.errors import ConfigError, ModelError
from autoprune.graph import Widths, apply_widths, keep_top
from autoprune.models import create_model
from autoprune.search.criteria import Batches, Criterion, channel_scores

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
    criterion: str | Criterion = "l1",
    scores: Mapping[str, Tensor] | None = None,
    batches: Batches = (),
) -> PrunedModel:
    """A physically pruned copy of ``dense`` (untouched) in eval mode: in each group, the channels with
    the highest ``scores``. Pass the scores ``channel_scores`` computed once on ``dense`` when pruning it
    many times; without them they are computed here with ``criterion`` (and ``batches`` if it needs data).
    ``criterion`` is recorded by name, so pass the one that computed ``scores``.
    """
    example = torch.zeros(1, *input_shape[1:])
    if scores is None:
        scores = channel_scores(dense, example, criterion, batches=batches)
    missing = sorted(set(widths) - set(scores))
    if missing:
        raise ConfigError(
            f"widths name groups {missing} that have no scores (scored: {sorted(scores)}): "
            "compute the scores with channel_scores on the same dense model"
        )
    dense_w = {name: len(s) for name, s in scores.items()}
    keep = keep_top(scores, {**dense_w, **widths})
    module = copy.deepcopy(dense).eval()
    keep = apply_widths(module, example, widths, keep=keep)
    full = {name: len(idx) for name, idx in keep.items()}
    name = criterion if isinstance(criterion, str) else criterion.name
    return PrunedModel(module, model_spec, num_classes, list(input_shape), full, keep, name)


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
