"""Search trials as plain data: the Pareto front and the top-trials markdown table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from autoprune.report._table import markdown_table


@dataclass(frozen=True)
class TrialPoint:
    """One search trial: ``accuracy`` is ``None`` for a trial never trained (predicted over budget) or
    stopped by the pruner before its fine-tune;
    ``measured_ms`` is set for finalists timed on the real backend; ``feasible`` is the search's verdict
    by prediction; ``within_budget`` its verdict on the measurement (noise margin included), when known."""

    number: int
    predicted_ms: float
    accuracy: float | None
    feasible: bool
    measured_ms: float | None = None
    chosen: bool = False
    within_budget: bool | None = None


def pareto_front(points: Iterable[TrialPoint]) -> list[TrialPoint]:
    """The non-dominated points (max accuracy, min predicted latency), fastest first.

    Points without an accuracy are ignored. A point is dominated when another is at least as fast and at
    least as accurate, and strictly better in one; exact ties dominate neither, so both are kept.
    """
    ranked = sorted(
        (p for p in points if p.accuracy is not None),
        key=lambda p: (p.predicted_ms, -_acc(p), p.number),
    )
    front: list[TrialPoint] = []
    for p in ranked:
        if not front or _acc(p) > _acc(front[-1]):
            front.append(p)
        elif _acc(p) == _acc(front[-1]) and p.predicted_ms == front[-1].predicted_ms:
            front.append(p)  # an exact tie with the last point on the front
    return front


TRIALS_HEADER = ["trial", "val accuracy", "predicted ms", "measured ms", "within budget", "chosen"]


def trials_table(trials: Sequence[TrialPoint], *, top: int = 10, budget_ms: float | None = None) -> str:
    """Markdown table of the ``top`` most accurate trials (untrained ones left out), faster first on ties.

    "within budget" is the search's verdict on the measurement when the point has one, else measured ms
    <= ``budget_ms``; "-" for a trial not measured or when neither is known.
    """
    trained = [t for t in trials if t.accuracy is not None]
    ranked = sorted(trained, key=lambda t: (-_acc(t), t.predicted_ms, t.number))[: max(top, 0)]
    rows = [
        [
            str(t.number),
            f"{100 * _acc(t):.2f} %",
            f"{t.predicted_ms:.4f}",
            "-" if t.measured_ms is None else f"{t.measured_ms:.4f}",
            _within(t, budget_ms),
            "✓" if t.chosen else "",
        ]
        for t in ranked
    ]
    return markdown_table(TRIALS_HEADER, rows)


def measured_within(t: TrialPoint, budget_ms: float | None) -> bool | None:
    """The search's verdict on ``t``'s measurement if it has one, else measured <= budget; None when
    ``t`` was not measured or no budget is known."""
    if t.within_budget is not None:
        return t.within_budget
    if t.measured_ms is None or budget_ms is None:
        return None
    return t.measured_ms <= budget_ms


def _within(t: TrialPoint, budget_ms: float | None) -> str:
    verdict = measured_within(t, budget_ms)
    return "-" if verdict is None else "yes" if verdict else "no"


def _acc(p: TrialPoint) -> float:
    assert p.accuracy is not None
    return p.accuracy


__all__ = ["TRIALS_HEADER", "TrialPoint", "pareto_front", "trials_table"]
