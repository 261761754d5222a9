"""The budget is met by measurement: finalists are timed on the real backend, in the strategy's order
(most accurate first), and accepted only with a margin for measurement noise.

A batch that measures over the budget teaches the search the predictor's bias near the budget (measured
over predicted): the remaining candidates are re-ranked under the corrected prediction, those it still
puts within the budget first. When the strategy's candidates run out, the last resort (``autoprune
search`` gives the widest uniform network that *measures* within the budget, ``autoprune adapt`` the
widest scaling of its network that does; both ``widest_measured``) is taken, so a search fails
only when even the narrowest network measures over the budget."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from autoprune.errors import BudgetError
from autoprune.graph import Widths
from autoprune.latency import Timing
from autoprune.search.budget import margin_for, within_budget
from autoprune.search.study import Candidate


@dataclass(frozen=True)
class Measured:
    candidate: Candidate
    measured_ms: float
    spread: float  # max/min of the interleaved repeats (of the ratio to the dense network, beside it)
    margin: float  # the fraction the measurement had to stay under the budget by
    within_budget: bool
    timing: Timing | None = None  # everything the measurement gave (ratio, repeats, the dense beside it)
    last_resort: bool = False  # the widest uniform network measured within the budget, the strategy's failing

    @classmethod
    def of(cls, candidate: Candidate, t: Timing, *, budget_ms: float, tolerance: float) -> Measured:
        margin = margin_for(t.spread, tolerance=tolerance)
        ok = math.isinf(budget_ms) or within_budget(t.median_ms, budget_ms, margin=margin)
        return cls(candidate, t.median_ms, t.spread, margin, ok, t)


@dataclass(frozen=True)
class Selection:
    """The chosen finalist, every measurement taken in order, and the predictor's bias the finalists
    showed (median measured / predicted; None until a batch measured over the budget)."""

    chosen: Measured
    measured: list[Measured]
    bias: float | None = None
    reranked: list[int] = field(default_factory=list)  # after which measurements the rest was re-ranked


def corrected_order(
    candidates: Sequence[Candidate], *, bias: float, budget_ms: float, tolerance: float
) -> list[Candidate]:
    """``candidates`` re-ranked under the corrected prediction (``bias`` x predicted): those it still puts
    within the budget by ``tolerance`` first, in the strategy's order, then the rest, fastest first."""
    fit = [c for c in candidates if within_budget(bias * c.predicted_ms, budget_ms, margin=tolerance)]
    rest = sorted((c for c in candidates if c not in fit), key=lambda c: c.predicted_ms)
    return fit + rest


def select_by_measurement(
    candidates: Sequence[Candidate],
    *,
    measure: Callable[[list[Widths]], list[Timing]],
    budget_ms: float,
    finalists: int,
    tolerance: float,
    max_rounds: int = 3,
    last_resort: Callable[[], Measured] | None = None,
) -> Selection:
    """Measure candidates ``finalists`` at a time in ranked order (at most ``max_rounds`` batches) and
    choose the first (best-ranked) one whose measurement is within budget by its margin; after a batch
    with none, learn the predictor's bias from every measurement so far and re-rank the rest. With none
    within budget, ``last_resort()`` when given, else a one-line :class:`BudgetError`. With no budget
    (``math.inf``: a search to an accuracy tolerance, whose candidates all hold it) the fastest measured
    of the first ``finalists``."""
    measured: list[Measured] = []
    if math.isinf(budget_ms):
        batch = list(candidates[:finalists])
        for cand, t in zip(batch, measure([c.widths for c in batch]), strict=True):
            measured.append(Measured.of(cand, t, budget_ms=budget_ms, tolerance=tolerance))
        return Selection(min(measured, key=lambda m: m.measured_ms), measured)
    queue, bias = list(candidates), None
    reranked: list[int] = []
    for _ in range(max_rounds):
        batch, queue = queue[:finalists], queue[finalists:]
        if not batch:
            break
        for cand, t in zip(batch, measure([c.widths for c in batch]), strict=True):
            measured.append(Measured.of(cand, t, budget_ms=budget_ms, tolerance=tolerance))
        fits = [m for m in measured if m.within_budget]
        if fits:
            return Selection(fits[0], measured, bias, reranked)
        seen = [m.measured_ms / m.candidate.predicted_ms for m in measured if m.candidate.predicted_ms > 0]
        if seen and float(np.median(seen)) > 1.0 and queue:
            bias = float(np.median(seen))
            queue = corrected_order(queue, bias=bias, budget_ms=budget_ms, tolerance=tolerance)
            reranked.append(len(measured))
    if last_resort is not None:
        chosen = last_resort()
        return Selection(chosen, [*measured, chosen], bias, reranked)
    if not measured:
        raise BudgetError("the search proposed no network to measure: raise the budget or --trials")
    fastest = min(measured, key=lambda m: m.measured_ms)
    raise BudgetError(
        f"none of {len(measured)} finalists measured within {budget_ms:.4g} ms with the noise margin "
        f"(fastest {fastest.measured_ms:.4g} ms, margin {100 * fastest.margin:.1f} %, "
        f"predicted {fastest.candidate.predicted_ms:.4g} ms): "
        "profile more networks near the budget, or raise it"
    )


def widest_by_measurement(
    ladder: Sequence[Widths],
    timed: Callable[[int], Timing],
    *,
    budget_ms: float,
    tolerance: float,
) -> tuple[int, Timing]:
    """The index of the widest network of ``ladder`` (widest first: latency falls along it) that measures
    within the budget by its noise margin, found by bisection, and its timing (``timed(i)`` is asked once
    per index); a one-line :class:`BudgetError` saying by how much when even the last measures over."""
    seen: dict[int, Timing] = {}

    def fits(i: int) -> bool:
        if i not in seen:
            seen[i] = timed(i)
        t = seen[i]
        return within_budget(t.median_ms, budget_ms, margin=margin_for(t.spread, tolerance=tolerance))

    last = len(ladder) - 1
    if not fits(last):
        ms = seen[last].median_ms
        needed = ms * (1 + margin_for(seen[last].spread, tolerance=tolerance))
        raise BudgetError(
            f"even the narrowest network of the search space measures {ms:.4g} ms, "
            f"{100 * (needed / budget_ms - 1):.1f} % over the budget of {budget_ms:.4g} ms "
            "with its noise margin: raise the budget"
        )
    if fits(0):
        return 0, seen[0]
    lo, hi = 0, last  # lo does not fit, hi fits
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi, seen[hi]


def widest_measured(
    ladder: Sequence[Widths],
    timed: Callable[[int], Timing],
    predict_ms: Callable[[Widths], float],
    *,
    budget_ms: float,
    tolerance: float,
) -> Measured:
    """A last resort: the widest network of ``ladder`` that measures within the budget
    (``widest_by_measurement``), as a :class:`Measured` marked ``last_resort``."""
    best, timing = widest_by_measurement(ladder, timed, budget_ms=budget_ms, tolerance=tolerance)
    candidate = Candidate(ladder[best], float(predict_ms(ladder[best])))
    m = Measured.of(candidate, timing, budget_ms=budget_ms, tolerance=tolerance)
    return replace(m, last_resort=True)
