"""``uniform``: one keep ratio for every group, the widest that meets the budget *by measurement*.

This is what a Torch-Pruning user does by hand: prune every layer by the same ratio, time it, and
bisect the ratio. The distinct uniform networks of the grid are ordered widest first and bisected on
the device (each timed interleaved with the dense network); the measurements are kept in the study so a
rerun resumes without timing them again.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna

from autoprune.graph import Widths
from autoprune.latency import Timing
from autoprune.search.finalists import Measured, widest_by_measurement, widest_measured
from autoprune.search.space import WidthSpace
from autoprune.search.strategies._base import (
    FALLBACKS,
    Fallbacks,
    SearchProblem,
    SearchStrategy,
    register_strategy,
)
from autoprune.search.study import Candidate

_ATTR = "uniform_measured"  # study user attribute: widths key -> [median ms, spread]


def uniform_ladder(space: WidthSpace) -> list[Widths]:
    """Every distinct uniform network of the grid, widest first."""
    ratios = sorted({w / g.channels for g in space.groups for w in space.choices(g)}, reverse=True)
    ladder: list[Widths] = []
    for r in ratios:
        widths = space.uniform(r)
        if not ladder or widths != ladder[-1]:
            ladder.append(widths)
    return ladder


def widest_uniform_by_measurement(problem: SearchProblem, study: optuna.Study) -> tuple[list[Widths], int]:
    """The ladder of uniform networks and the index of the widest one within the budget by measurement
    (bisection: latency falls along the ladder); a one-line :class:`BudgetError` saying by how much when
    even the narrowest measures over the budget."""
    ladder = uniform_ladder(problem.space)
    best, _ = _bisect(problem, study, ladder)
    return ladder, best


def widest_uniform_measured(problem: SearchProblem, study: optuna.Study) -> Measured:
    """Every search's last resort, when none of its own candidates measured within the budget: the widest
    uniform network that does (its timings shared with ``uniform``'s, kept in the study)."""
    ladder = uniform_ladder(problem.space)
    return widest_measured(ladder, _timed(problem, study, ladder), problem.predict_ms,
                           budget_ms=problem.budget_ms, tolerance=problem.tolerance)  # fmt: skip


def _bisect(problem: SearchProblem, study: optuna.Study, ladder: list[Widths]) -> tuple[int, Timing]:
    return widest_by_measurement(ladder, _timed(problem, study, ladder), budget_ms=problem.budget_ms,
                                 tolerance=problem.tolerance)  # fmt: skip


def _timed(problem: SearchProblem, study: optuna.Study, ladder: list[Widths]) -> Callable[[int], Timing]:
    """Each ladder network's timing, kept in the study, so that a rerun (or the other of ``uniform`` and
    the last resort) measures none twice."""
    cache: dict[str, list[float]] = dict(study.user_attrs.get(_ATTR, {}))

    def timed(i: int) -> Timing:
        key = ",".join(str(v) for v in ladder[i].values())
        if key not in cache:
            t = problem.measure([ladder[i]])[0]
            cache[key] = [t.median_ms, t.spread]
            study.set_user_attr(_ATTR, cache)
        ms, spread = cache[key]
        return Timing(float(ms), float(spread))

    return timed


@register_strategy
class UniformStrategy(SearchStrategy):
    name = "uniform"
    trial_means = "unused: bisected by measurement"
    evaluates = False
    options = (FALLBACKS,)

    def __init__(self, *, fallbacks: int = 2) -> None:
        self.fallbacks = Fallbacks(fallbacks)

    def run(
        self,
        problem: SearchProblem,
        *,
        study: optuna.Study,
        trials: int,
        on_trial: Callable[[int, int], None] | None = None,
    ) -> list[Candidate]:
        ladder, best = widest_uniform_by_measurement(problem, study)
        chosen = ladder[
            best : best + 1 + self.fallbacks.count
        ]  # narrower ones follow, should a re-timing disagree
        return [Candidate(w, float(problem.predict_ms(w))) for w in chosen]
