"""Importance criteria: ``criterion(group) -> scores``, one score per channel of a Torch-Pruning group
(higher is kept). Criteria are looked up by name so run directories can record which one ran."""

from __future__ import annotations

from collections.abc import Callable

import torch_pruning as tp

from autoprune.errors import ConfigError
from autoprune.graph import Criterion

_CRITERIA: dict[str, Callable[[], Criterion]] = {
    # L1 norm of each channel's weights, summed over the coupled layers (Li et al., 2017).
    "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
    "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
    # A control: any criterion worth having must beat it.
    "random": lambda: tp.importance.RandomImportance(),
}


def register_criterion(name: str, factory: Callable[[], Criterion]) -> None:
    _CRITERIA[name] = factory


def list_criteria() -> list[str]:
    return sorted(_CRITERIA)


def get_criterion(name: str) -> Criterion:
    if name not in _CRITERIA:
        raise ConfigError(f"unknown importance criterion '{name}': use one of {', '.join(list_criteria())}")
    return _CRITERIA[name]()
