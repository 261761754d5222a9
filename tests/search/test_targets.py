"""Several targets handed to the search as one (``autoprune.search.targets``): the binding latency, one
constraint per target, and one timing whose margin rule gives every target's own verdict."""

from __future__ import annotations

import math
import random

import optuna
import pytest
import torch

from autoprune.errors import ConfigError
from autoprune.latency import Timing
from autoprune.search import record_budget
from autoprune.search.finalists import Measured
from autoprune.search.study import Candidate
from autoprune.search.targets import Target, Targets

W = {"a": 8}


def _target(
    name: str, budget: float, ms: float, *, measured: Timing | None = None, tol: float = 0.03
) -> Target:
    return Target(
        name, budget, lambda ws: [ms] * len(ws),
        measure=None if measured is None else (lambda ws: [measured] * len(ws)), tolerance=tol,
    )  # fmt: skip


def test_one_target_is_the_problem_unchanged() -> None:
    t = Targets([_target("a", 2.0, 1.5, measured=Timing(1.4, 1.01))])
    assert t.predict_many([W]) == [1.5]
    assert t.timer()([W]) == [Timing(1.4, 1.01)]
    assert t.readings(W) is None  # one target: nothing of its own to report


def test_the_binding_latency_is_the_tightest_share_in_the_first_targets_ms() -> None:
    t = Targets([_target("a", 2.0, 1.0), _target("b", 10.0, 9.0), _target("c", 1.0, 0.5)])
    assert t.predict_ms(W) == pytest.approx(2.0 * 0.9)  # b uses 90 % of its budget
    assert t.excess(W) == pytest.approx({"a": -1.0, "b": -1.0, "c": -0.5})


def test_the_binding_latency_is_differentiable_through_every_target() -> None:
    first = Target("a", 2.0, lambda ws: [0.0], latency=lambda f: f.sum(-1))
    second = Target("b", 1.0, lambda ws: [0.0], latency=lambda f: 3 * f[..., 0])
    f = torch.tensor([0.5, 0.25], requires_grad=True)
    Targets([first, second]).latency(f).backward()  # b binds: 1.5 / 1 > 0.75 / 2
    assert f.grad is not None and f.grad.tolist() == pytest.approx([6.0, 0.0])
    no_grad = Target("c", 1.0, lambda ws: [0.0])
    assert not Targets([first, no_grad]).differentiable


@pytest.mark.parametrize("seed", range(200))
def test_one_timing_gives_every_targets_own_verdict(seed: int) -> None:
    rng = random.Random(seed)
    tol = rng.choice([0.0, 0.03, 0.05])
    targets, verdict = [], True
    for i in range(rng.randint(2, 4)):
        budget = rng.uniform(0.5, 5.0)
        predicted = budget * rng.uniform(0.8, 1.05)
        here = i == 0 or rng.random() < 0.6
        ms, spread = predicted * rng.uniform(0.9, 1.1), rng.uniform(1.0, 1.08)
        t_tol = tol if i == 0 else rng.choice([0.0, 0.02, 0.08])
        timing = Timing(ms, spread, ratio=0.5, ratio_spread=spread, reference_ms=2 * ms) if here else None
        targets.append(_target(f"t{i}", budget, predicted, measured=timing, tol=t_tol))
        need = ms * (1 + max(t_tol, spread - 1)) if here else predicted
        verdict &= need <= budget
    t = Targets(targets)
    [combined] = t.timer()([W])
    m = Measured.of(Candidate(W, t.predict_ms(W)), combined, budget_ms=t.budget_ms, tolerance=tol)
    readings = t.readings(W)
    assert readings is not None and [r.within_budget for r in readings] == [r.need <= 1 for r in readings]
    if not math.isclose(max(r.need for r in readings), 1.0, rel_tol=1e-9):  # not on the edge itself
        assert m.within_budget == verdict == all(r.within_budget for r in readings)


def test_a_target_not_here_is_reported_as_predicted_only() -> None:
    t = Targets([_target("a", 2.0, 1.0, measured=Timing(1.0, 1.0)), _target("b", 1.0, 0.9)])
    t.timer()([W])
    a, b = t.report(W)
    assert a["judged_on"] == "measurement" and a["measured_ms"] == 1.0
    assert b["judged_on"].startswith("predicted only") and b["measured_ms"] is None
    assert b["within_budget"] is True and b["slack"] == pytest.approx(0.1)


def test_a_study_refuses_other_targets(tmp_path) -> None:  # type: ignore[no-untyped-def]
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s")
    assert record_budget(study, 2.0, strategy="uniform", targets={"a": 2.0, "b": 1.0})
    assert not record_budget(study, 2.0, strategy="uniform", targets={"a": 2.0, "b": 1.0})
    with pytest.raises(ConfigError, match=r"run with the targets a: 2 ms, b: 1 ms, not a: 2 ms, b: 0\.5 ms"):
        record_budget(study, 2.0, strategy="uniform", targets={"a": 2.0, "b": 0.5})
    with pytest.raises(ConfigError, match=r"not \(one: the budget alone\)"):
        record_budget(study, 2.0, strategy="uniform")
