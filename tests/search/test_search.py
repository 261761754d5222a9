from __future__ import annotations

import optuna
import pytest

from autoprune.errors import BudgetError, ConfigError
from autoprune.graph import ChannelGroup
from autoprune.latency import Timing
from autoprune.search import (
    Candidate,
    Measured,
    WidthSpace,
    budget_frame,
    check_budget,
    corrected_order,
    margin_for,
    record_budget,
    reference_scale,
    resolve_budget,
    search_reference,
    select_by_measurement,
    within_budget,
)

GROUPS = tuple(ChannelGroup(n, c, ()) for n, c in [("a", 16), ("b", 32), ("c", 64), ("d", 12)])
SPACE = WidthSpace(GROUPS, min_ratio=0.25)


def cost(widths: dict[str, int]) -> float:
    """A stand-in latency law (ms): grows with every group's kept fraction."""
    return sum(w / g.channels for g, w in zip(GROUPS, widths.values(), strict=True))


def test_space_choices_follow_the_rounding_grid() -> None:
    assert SPACE.choices(GROUPS[2]) == [16, 24, 32, 40, 48, 56, 64]
    assert SPACE.choices(GROUPS[3]) == list(range(3, 13))  # small groups: whole channels
    assert SPACE.narrowest() == {"a": 8, "b": 8, "c": 16, "d": 3}
    assert SPACE.dense() == {"a": 16, "b": 32, "c": 64, "d": 12}
    # Off the multiples of 8: multiples from the narrowest, then the dense width (not aligned to it).
    odd = WidthSpace((ChannelGroup("e", 20, ()), ChannelGroup("f", 36, ())), min_ratio=0.25)
    assert [odd.choices(g) for g in odd.groups] == [[8, 16, 20], [8, 16, 24, 32, 36]]
    assert odd.uniform(0.5) == {"e": 8, "f": 16} and odd.uniform(0.1) == odd.narrowest()


def test_space_parameters_are_indices_into_the_choices() -> None:
    odd = WidthSpace((ChannelGroup("e", 20, ()), ChannelGroup("f", 36, ())), min_ratio=0.25)
    assert odd.params({"e": 20, "f": 24}) == {"w:e": 2, "w:f": 2}
    assert odd.widths({"w:e": 2, "w:f": 2}) == {"e": 20, "f": 24}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        widths = odd.suggest(trial)
        assert odd.contains(widths) and odd.widths(trial.params) == widths
    assert not odd.contains({"e": 12, "f": 24}) and not odd.contains({"e": 20})
    with pytest.raises(ConfigError, match="not on the search grid"):
        odd.params({"e": 12, "f": 24})
    with pytest.raises(ConfigError, match="--study"):
        odd.widths({"w:e": 3, "w:f": 0})


CANDIDATES = [
    Candidate(SPACE.uniform(r), cost(SPACE.uniform(r)), 1 - i / 10, i)
    for i, r in enumerate((0.9, 0.7, 0.5, 0.3))
]


def exact(ws: list[dict[str, int]]) -> list[Timing]:
    return [Timing(cost(w), 1.0) for w in ws]


def test_finalists_are_chosen_by_measurement_in_ranked_order() -> None:
    slow = CANDIDATES[0].widths  # the device is slower than predicted for the best-ranked one only

    def measure(ws: list[dict[str, int]]) -> list[Timing]:
        return [Timing(cost(w) * (2 if w == slow else 1), 1.0) for w in ws]

    budget = CANDIDATES[0].predicted_ms
    picked = select_by_measurement(CANDIDATES, measure=measure, budget_ms=budget, finalists=2, tolerance=0.0)
    chosen, measured = picked.chosen, picked.measured
    assert chosen.candidate is CANDIDATES[1] and chosen.within_budget
    assert measured[0].candidate is CANDIDATES[0] and not measured[0].within_budget
    with pytest.raises(BudgetError, match="none of"):
        select_by_measurement(
            CANDIDATES, measure=lambda ws: [Timing(99.0, 1.0)] * len(ws), budget_ms=budget, finalists=2,
            tolerance=0.0,
        )  # fmt: skip


def test_a_finalist_at_the_budgets_edge_needs_the_noise_margin() -> None:
    at_edge = CANDIDATES[1].predicted_ms  # measures exactly at the budget
    picked = select_by_measurement(
        CANDIDATES[1:], measure=exact, budget_ms=at_edge, finalists=1, tolerance=0.03
    )
    chosen, measured = picked.chosen, picked.measured
    assert not measured[0].within_budget and chosen.candidate is CANDIDATES[2]
    # A noisy measurement needs more than the tolerance: its own spread.
    assert margin_for(1.10, tolerance=0.03) == pytest.approx(0.10)
    assert margin_for(1.01, tolerance=0.03) == pytest.approx(0.03)
    assert within_budget(1.0, 1.05, margin=0.03) and not within_budget(1.0, 1.05, margin=0.06)


def test_finalists_over_their_prediction_teach_the_bias_and_the_rest_is_reranked() -> None:
    """Every network measures 10 % over its prediction. In the strategy's order the next two would be
    over as well and the search would fail; the first one's measurement re-ranks the rest, and the
    first candidate the corrected prediction puts within the budget is measured next."""
    ranked = [Candidate({"a": i}, ms, 0.9 - i / 100, i) for i, ms in enumerate((1.0, 0.99, 0.98, 0.85, 0.80))]

    def biased(ws: list[dict[str, int]]) -> list[Timing]:
        return [Timing(1.10 * ranked[w["a"]].predicted_ms, 1.0) for w in ws]

    picked = select_by_measurement(ranked, measure=biased, budget_ms=1.0, finalists=1, tolerance=0.03)
    assert picked.bias == pytest.approx(1.10) and picked.reranked == [1]
    assert [m.candidate.trial for m in picked.measured] == [0, 3] and picked.chosen.candidate.trial == 3
    # Re-ranked: the ones the corrected prediction keeps within budget, in the strategy's order, first.
    order = corrected_order(ranked, bias=1.10, budget_ms=1.0, tolerance=0.03)
    assert [c.trial for c in order] == [3, 4, 2, 1, 0]


def test_when_no_candidate_fits_the_last_resort_is_taken_else_the_search_fails_in_one_line() -> None:
    over = lambda ws: [Timing(9.0, 1.0)] * len(ws)  # noqa: E731
    resort = Measured(Candidate({"a": 9}, 0.5), 0.6, 1.0, 0.03, True, last_resort=True)
    picked = select_by_measurement(
        CANDIDATES, measure=over, budget_ms=1.0, finalists=2, tolerance=0.03, last_resort=lambda: resort
    )
    assert picked.chosen is resort and picked.measured[-1] is resort and len(picked.measured) == 5
    with pytest.raises(BudgetError, match="none of 4 finalists"):
        select_by_measurement(CANDIDATES, measure=over, budget_ms=1.0, finalists=2, tolerance=0.03)


def test_the_budget_frame_is_the_quiet_profile_for_ms_and_the_study_reference_for_a_ratio() -> None:
    assert budget_frame(budget_in_ms=True, reference_ms=2.4, profile_reference_ms=2.0) == 2.0
    assert budget_frame(budget_in_ms=False, reference_ms=2.4, profile_reference_ms=2.0) == 2.4
    assert budget_frame(budget_in_ms=True, reference_ms=2.4, profile_reference_ms=None) == 2.4


def test_budget_is_recorded_once_and_a_rerun_keeps_or_refuses_it() -> None:
    study = optuna.create_study(direction="maximize")
    measured = []

    def dense() -> float:
        measured.append(1)
        return 2.0 + len(measured)  # a new measurement would differ each time

    first = resolve_budget(study, budget_ms=None, budget_ratio=0.5, measure_dense=dense)
    assert record_budget(study, first, strategy="optuna")
    again = resolve_budget(study, budget_ms=None, budget_ratio=0.5, measure_dense=dense)
    assert again == first and len(measured) == 1 and not record_budget(study, again, strategy="optuna")
    with pytest.raises(ConfigError, match="budget"):
        record_budget(study, first * 0.9, strategy="optuna")
    with pytest.raises(ConfigError, match="strategy"):
        record_budget(study, first, strategy="knapsack")


def test_the_search_reference_is_measured_once_per_study_and_scales_the_profile() -> None:
    study = optuna.create_study(direction="maximize")
    timings = iter([0.8, 0.5])
    assert search_reference(study, lambda: next(timings)) == 0.8
    assert search_reference(study, lambda: next(timings)) == 0.8  # resumed: converts as it did
    assert reference_scale(profile_reference_ms=0.4, reference_ms=0.8) == 2.0
    assert reference_scale(profile_reference_ms=None, reference_ms=0.8) == 1.0  # a profile without one


def test_budget_below_the_fastest_network_is_rejected() -> None:
    with pytest.raises(BudgetError, match=r"at least 0\.5 ms"):
        check_budget(0.1, fastest_ms=0.5)
    check_budget(0.5, fastest_ms=0.5)
