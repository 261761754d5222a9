"""``flops``: the optuna strategy constrained on MACs instead of predicted latency.

This is the FLOPs-constrained search a user can run without a latency profile. Its MACs budget is the
MACs of the widest uniform network that measures within the latency budget, so both constraints start
from the same network; its finalists are then measured against the latency budget like any other's.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna

from autoprune.graph import Widths
from autoprune.search.strategies._base import SearchProblem, register_strategy
from autoprune.search.strategies.optuna import OptunaStrategy
from autoprune.search.strategies.uniform import widest_uniform_by_measurement


@register_strategy
class FlopsStrategy(OptunaStrategy):
    name = "flops"

    def constraint(
        self, problem: SearchProblem, study: optuna.Study
    ) -> tuple[Callable[[Widths], float], float]:
        limit = study.user_attrs.get("macs_budget")
        if limit is None:
            ladder, best = widest_uniform_by_measurement(problem, study)
            limit = float(problem.macs(ladder[best]))
            study.set_user_attr("macs_budget", limit)
        return problem.macs, float(limit)

    def constrain(
        self, trial: optuna.Trial, problem: SearchProblem, widths: Widths, cost: float, limit: float
    ) -> bool:
        """The MACs limit, in place of the latency budgets (the finalists are measured against those)."""
        trial.set_constraint("budget", cost - limit)
        return cost <= limit
