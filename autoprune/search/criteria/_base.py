"""The importance-criterion plug-in: a small ABC, a name registry, and helpers shared by criteria.

A criterion scores the channels of one Torch-Pruning group (higher is kept). Data-driven criteria
collect what they need from a few calibration batches in ``prepare`` before any group is scored.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import ClassVar, TypeVar

import torch
import torch_pruning as tp
from torch import Tensor, nn

from autoprune._registry import Registry

Batches = Sequence[tuple[Tensor, Tensor]]
"""Calibration data: a few (inputs, labels) batches, e.g. from ``autoprune.training.calibration_batches``."""


class Criterion(ABC):
    """Scores the channels of a group: ``criterion(group) -> Tensor[channels]``, finite, higher = keep.

    Class flags say what a criterion needs, so callers check capabilities rather than names.
    """

    name: ClassVar[str]
    needs_data: ClassVar[bool] = False  # needs calibration batches in prepare()
    needs_grad: ClassVar[bool] = False  # needs gradients of the loss on those batches

    def prepare(self, model: nn.Module, batches: Batches) -> None:  # noqa: B027 (optional hook)
        """Collect what scoring needs from ``model`` and ``batches``; data-free criteria need nothing."""

    @abstractmethod
    def __call__(self, group: tp.Group) -> Tensor:
        """One score per channel of ``group`` (in the order of its root layer's channels)."""


_C = "autoprune.search.criteria"
CRITERIA: Registry[Criterion] = Registry(
    "importance criterion",
    {
        "l1": f"{_C}._magnitude:L1",
        "l2": f"{_C}._magnitude:L2",
        "bn_scale": f"{_C}._magnitude:BNScale",
        "taylor": f"{_C}._taylor:Taylor",
        "fpgm": f"{_C}._fpgm:FPGM",
        "correlation": f"{_C}._correlation:Correlation",
        "redundancy": f"{_C}._redundancy:Redundancy",
        "pfp": f"{_C}._pfp:PFP",
        "random": f"{_C}._random:Random",
    },
)
C = TypeVar("C", bound=type[Criterion])


def register_criterion(cls: C) -> C:
    """Class decorator: make ``cls`` available to ``get_criterion(cls.name)``."""
    return CRITERIA.register(cls)


def list_criteria() -> list[str]:
    """Criterion names, sorted (the CLI's ``--help`` lists these)."""
    return CRITERIA.names()


def get_criterion(name: str, **options: object) -> Criterion:
    """A new criterion by name, e.g. ``get_criterion("random", seed=0)``."""
    return CRITERIA.create(name, **options)


def group_channels(group: tp.Group) -> int:
    """How many channels the group's scores must have: those of its root (first) dependency."""
    _, idxs = group[0]
    return len(idxs)


def or_zeros(scores: Tensor | None, group: tp.Group) -> Tensor:
    """Torch-Pruning's importances return None for a group without weighted layers: score it all zero."""
    return torch.zeros(group_channels(group)) if scores is None else scores


@contextmanager
def untouched(model: nn.Module) -> Iterator[None]:
    """Run the body with ``model`` in eval mode (BatchNorm statistics stay put), then restore every
    module's train/eval mode and every parameter's gradient and ``requires_grad``."""
    modes = [(m, m.training) for m in model.modules()]
    params = list(model.parameters())
    grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
    flags = [p.requires_grad for p in params]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
        for p, g, flag in zip(params, grads, flags, strict=True):
            p.grad = g
            p.requires_grad_(flag)
