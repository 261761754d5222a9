"""One entry point for every strategy: record the budget on the study (refusing another), then run."""

from __future__ import annotations

from collections.abc import Callable

import optuna

from autoprune.search.budget import record_budget
from autoprune.search.strategies import SearchProblem, SearchStrategy
from autoprune.search.study import Candidate


def run_strategy(
    strategy: SearchStrategy,
    problem: SearchProblem,
    *,
    study: optuna.Study,
    trials: int,
    on_trial: Callable[[int, int], None] | None = None,
) -> list[Candidate]:
    """Ranked candidates of ``strategy``; a rerun on the same study resumes it, or refuses when its
    budget or strategy differ."""
    record_budget(study, problem.budget_ms, strategy=strategy.name, targets=problem.budgets)
    return strategy.run(problem, study=study, trials=trials, on_trial=on_trial)
