"""Search strategies, by name: ``optuna`` (default), ``gates``, ``droppruning``, ``flops``,
``knapsack``, ``uniform``, ``pfp`` (provable filter pruning's allocation from an error tolerance),
``playprune`` (the default with an accuracy tolerance, ``--max-accuracy-drop``), ``screen`` (hundreds
of budget-projected candidates ranked by an adaptive-BatchNorm proxy, a fine-tuned rerank beside the
uniform network and a guard against it), ``halp`` (HALP's progressive pruning during a fine-tune)."""

from __future__ import annotations

from autoprune.search.strategies._base import (
    DenseNetwork,
    SearchProblem,
    SearchStrategy,
    StrategyOption,
    StudySettings,
    get_strategy,
    list_strategies,
    register_strategy,
    strategy_class,
    strategy_options,
)

__all__ = [
    "DenseNetwork",
    "SearchProblem",
    "SearchStrategy",
    "StrategyOption",
    "StudySettings",
    "get_strategy",
    "list_strategies",
    "register_strategy",
    "strategy_class",
    "strategy_options",
]
