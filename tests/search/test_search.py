from __future__ import annotations

import optuna
import pytest

from autoprune.errors import BudgetError, ConfigError
from autoprune.graph import ChannelGroup
from autoprune.search import (
    WidthSpace,
    check_budget,
    open_study,
    ranked_candidates,
    run_search,
    select_by_measurement,
)

GROUPS = tuple(ChannelGroup(n, c, ()) for n, c in [("a", 16), ("b", 32), ("c", 64), ("d", 12)])
SPACE = WidthSpace(GROUPS, min_ratio=0.25)


def cost(widths: dict[str, int]) -> float:
    """A stand-in latency law (ms): grows with every group's kept fraction."""
    return sum(w / g.channels for g, w in zip(GROUPS, widths.values(), strict=True))


def accuracy(widths: dict[str, int]) -> float:
    """A stand-in accuracy: wider is better, so the best feasible network sits at the budget."""
    return sum(widths.values()) / sum(g.channels for g in GROUPS)


def _search(tmp_path, budget: float, trials: int, name: str = "s") -> optuna.Study:  # type: ignore[no-untyped-def]
    study = open_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name=name, seed=0, trials=trials)
    run_search(study, SPACE, evaluate=accuracy, predict_ms=cost, budget_ms=budget, trials=trials)
    return study


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


def test_chosen_widths_satisfy_the_constraint(tmp_path) -> None:  # type: ignore[no-untyped-def]
    budget = 2.4
    study = _search(tmp_path, budget, trials=25)
    candidates = ranked_candidates(study, SPACE)
    assert candidates, "the search found no feasible network"
    assert all(cost(c.widths) <= budget for c in candidates)
    assert candidates == sorted(candidates, key=lambda c: -c.accuracy)
    # Infeasible trials exist (the sampler explores) but are never candidates.
    infeasible = [t for t in study.trials if t.constraints["latency"] > 0]
    assert all(t.number not in {c.trial for c in candidates} for t in infeasible)


def test_rerun_resumes_the_study_and_refuses_another_budget(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _search(tmp_path, 2.4, trials=6)
    study = _search(tmp_path, 2.4, trials=9)
    assert len(study.trials) == 9
    with pytest.raises(ConfigError, match="budget"):
        _search(tmp_path, 1.5, trials=10)


def test_finalists_are_chosen_by_measurement(tmp_path) -> None:  # type: ignore[no-untyped-def]
    candidates = ranked_candidates(_search(tmp_path, 2.4, trials=15), SPACE)
    # The real device is slower than predicted for the most accurate candidate only.
    slow = candidates[0].widths

    def measure(ws: list[dict[str, int]]) -> list[float]:
        return [cost(w) * (2 if w == slow else 1) for w in ws]

    chosen, measured = select_by_measurement(candidates, measure=measure, budget_ms=2.4, finalists=3)
    assert chosen.within_budget and chosen.measured_ms <= 2.4 and chosen.candidate.widths != slow
    assert measured[0].candidate.widths == slow and not measured[0].within_budget
    with pytest.raises(BudgetError, match="none of"):
        select_by_measurement(candidates, measure=lambda ws: [99.0] * len(ws), budget_ms=2.4, finalists=2)


def test_budget_below_the_fastest_network_is_rejected() -> None:
    with pytest.raises(BudgetError, match=r"at least 0\.5 ms"):
        check_budget(0.1, fastest_ms=0.5)
    check_budget(0.5, fastest_ms=0.5)
