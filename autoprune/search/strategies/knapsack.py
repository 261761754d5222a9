"""``knapsack`` (HALP-style): keep the most important channels that fit the latency budget.

Each channel has an importance (the criterion's score, normalised by its group's mean so groups are
comparable) and each step down a group's width grid has a latency cost (the predictor's change when that
one group narrows, from the current network, so interactions between layers are kept). A greedy
knapsack starts from the dense network and repeatedly takes the step that loses the least importance per
millisecond saved, until the prediction is within budget; it keeps going for narrower fallbacks (each
3 % further under the budget): its networks can be far from what the profile sampled (most groups at
their narrowest), where the predictor errs most, and a fallback costs only a measurement.
Unlike HALP it prunes once, before the final fine-tune, not progressively during it.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna

from autoprune.search.allocation import kept_importance
from autoprune.search.strategies._base import (
    FALLBACKS,
    Fallbacks,
    SearchProblem,
    SearchStrategy,
    register_strategy,
)
from autoprune.search.study import Candidate


@register_strategy
class KnapsackStrategy(SearchStrategy):
    name = "knapsack"
    trial_means = "unused: it trains no network while searching"
    evaluates = False
    options = (FALLBACKS,)

    def __init__(self, *, fallbacks: int = 8, fallback_step: float = 0.03) -> None:
        self.fallbacks = Fallbacks(fallbacks, fallback_step)

    def run(
        self,
        problem: SearchProblem,
        *,
        study: optuna.Study,
        trials: int,
        on_trial: Callable[[int, int], None] | None = None,
    ) -> list[Candidate]:
        steps = self.fallbacks.ladder(problem, kept_importance(problem.space, problem.scores))
        return [Candidate(w, ms) for w, ms in steps]
