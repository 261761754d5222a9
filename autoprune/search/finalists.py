"""The budget is met by measurement: finalists are timed on the real backend, best accuracy first."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from autoprune.errors import BudgetError
from autoprune.graph import Widths
from autoprune.search.optuna_strategy import Candidate


@dataclass(frozen=True)
class Measured:
    candidate: Candidate
    measured_ms: float
    within_budget: bool


def check_budget(budget_ms: float, *, fastest_ms: float) -> None:
    """Reject up front a budget below the fastest network of the search space."""
    if budget_ms < fastest_ms:
        raise BudgetError(
            f"budget {budget_ms:.4g} ms is below the fastest network in the search space "
            f"({fastest_ms:.4g} ms, the narrowest): raise the budget to at least {fastest_ms:.4g} ms"
        )


def select_by_measurement(
    candidates: Sequence[Candidate],
    *,
    measure: Callable[[list[Widths]], list[float]],
    budget_ms: float,
    finalists: int,
    max_rounds: int = 3,
) -> tuple[Measured, list[Measured]]:
    """Measure candidates ``finalists`` at a time, most accurate first; return the most accurate one
    that measures within budget, and every measurement taken."""
    measured: list[Measured] = []
    for start in range(0, min(len(candidates), finalists * max_rounds), finalists):
        batch = list(candidates[start : start + finalists])
        for cand, ms in zip(batch, measure([c.widths for c in batch]), strict=True):
            measured.append(Measured(cand, ms, ms <= budget_ms))
        fits = [m for m in measured if m.within_budget]
        if fits:
            return max(fits, key=lambda m: m.candidate.accuracy), measured
    fastest = min(measured, key=lambda m: m.measured_ms)
    raise BudgetError(
        f"none of {len(measured)} finalists measured within {budget_ms:.4g} ms "
        f"(fastest {fastest.measured_ms:.4g} ms, "
        f"predicted {fastest.candidate.predicted_ms:.4g} ms): "
        "profile more networks near the budget, or raise it"
    )
