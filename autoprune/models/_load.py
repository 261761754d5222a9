"""Build a model from its spec, load a checkpoint into it, and check that it runs on an input shape."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from autoprune.errors import ModelError
from autoprune.models._checkpoint import load_checkpoint, read_checkpoint
from autoprune.models._registry import create_model


def load_model(
    spec: str, *, checkpoint: str | Path | None = None, num_classes: int | None = None
) -> tuple[nn.Module, int]:
    """Build ``spec`` and load ``checkpoint``; the class count comes from the flag, else the checkpoint."""
    meta = read_checkpoint(checkpoint)[1] if checkpoint else {}
    saved = meta.get("num_classes")
    if num_classes is not None and saved is not None and int(saved) != num_classes:
        raise ModelError(
            f"checkpoint '{checkpoint}' has {saved} classes, not {num_classes}: use matching data"
        )
    classes = num_classes or int(saved or 10)
    net = create_model(spec, num_classes=classes)
    if checkpoint:
        load_checkpoint(net, checkpoint)
    return net.eval(), classes


def check_forward(net: nn.Module, spec: str, input_shape: Sequence[int]) -> None:
    """Fail with the fix named when ``net`` cannot run on one input of ``input_shape``."""
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, *input_shape[1:]))
    except Exception as exc:
        shape = "x".join(str(d) for d in input_shape)
        raise ModelError(
            f"model '{spec}' fails on input {shape} ({type(exc).__name__}): pass a matching --input-shape"
        ) from exc
