"""Search strategies, by name: ``optuna`` (default), ``flops``, ``knapsack``, ``uniform``."""

from __future__ import annotations

from autoprune.search.strategies._base import (
    SearchProblem,
    SearchStrategy,
    StudySettings,
    get_strategy,
    list_strategies,
    register_strategy,
    strategy_class,
)

__all__ = [
    "SearchProblem",
    "SearchStrategy",
    "StudySettings",
    "get_strategy",
    "list_strategies",
    "register_strategy",
    "strategy_class",
]
