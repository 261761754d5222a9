"""Every search strategy against its contract (`contracts/strategy.py`), and what defines each one.

The problem is synthetic, so the checks are exact: latency is a known law of the widths, the "device"
measures that law, accuracy grows with the kept importance."""

from __future__ import annotations

import copy
import itertools
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import optuna
import pytest
import torch
from contracts import covered
from contracts.strategy import (
    BUDGET,
    GROUPS,
    SPACE,
    CountingDevice,
    StrategyContract,
    accuracy,
    dense_network,
    latency,
    macs,
    problem,
)
from tiny_net import EXAMPLE, Tiny, tiny_data

from autoprune.config import SearchConfig
from autoprune.errors import ConfigError
from autoprune.graph import Widths
from autoprune.latency import Timing
from autoprune.search import (
    Candidate,
    SearchProblem,
    WidthSpace,
    get_strategy,
    list_strategies,
    load_start,
    open_study,
    run_strategy,
    strategy_class,
    strategy_options,
)
from autoprune.search.strategies.uniform import uniform_ladder
from autoprune.search.study import trained

# ---------------------------------------------------------------- every strategy


class TestOptuna(StrategyContract):
    name = "optuna"


class TestOptunaTwoObjectives(StrategyContract):
    name = "optuna"
    options: ClassVar[dict[str, Any]] = {"objectives": 2}


class TestFlops(StrategyContract):
    name = "flops"

    def within_constraint(self, candidate: Candidate, study: optuna.Study) -> bool:
        """Constrained on MACs: its finalists meet the latency budget by measurement, not prediction."""
        return macs(candidate.widths) <= study.user_attrs["macs_budget"]

    def within_every_target(self, candidate: Candidate, study: optuna.Study) -> bool:
        """Its MACs limit is the widest uniform network's that measures within both budgets."""
        return self.within_constraint(candidate, study)


class TestKnapsack(StrategyContract):
    name = "knapsack"


class TestUniform(StrategyContract):
    name = "uniform"


class TestGates(StrategyContract):
    name = "gates"
    trials = 3

    def make_problem(self, device: CountingDevice, *, budget_ms: float, work_dir: Path) -> SearchProblem:
        return replace(problem(device, budget_ms=budget_ms), network=dense_network(work_dir))


class TestDropPruning(StrategyContract):
    name = "droppruning"
    options: ClassVar[dict[str, Any]] = {"steps": 2}
    trials = 2

    def make_problem(self, device: CountingDevice, *, budget_ms: float, work_dir: Path) -> SearchProblem:
        network = dense_network(work_dir, differentiable=False)  # needs no latency gradients
        return replace(problem(device, budget_ms=budget_ms), network=network)


class TestPlayPrune(StrategyContract):
    """Play and Prune under a tolerance (15 points of the law's accuracy) and the contract's budget:
    both must hold."""

    name = "playprune"
    trials = 4
    two_target_trials = 12  # the tighter joint budget takes the game more steps

    def make_problem(self, device: CountingDevice, *, budget_ms: float, work_dir: Path) -> SearchProblem:
        network = replace(dense_network(work_dir), epochs=0.5)  # one batch per step: the law scores it
        return replace(problem(device, budget_ms=budget_ms), network=network, max_accuracy_drop=15.0)


class TestPFPStrategy(StrategyContract):
    name = "pfp"

    def make_problem(self, device: CountingDevice, *, budget_ms: float, work_dir: Path) -> SearchProblem:
        return replace(problem(device, budget_ms=budget_ms), network=dense_network(work_dir))


class TestHalp(StrategyContract):
    name = "halp"
    options: ClassVar[dict[str, Any]] = {"halp_steps": 3, "halp_prune_fraction": 0.75, "fallbacks": 3}
    trials = 1

    def make_problem(self, device: CountingDevice, *, budget_ms: float, work_dir: Path) -> SearchProblem:
        # 4 batches: a step after each of the first 3, the last recovers.
        network = replace(dense_network(work_dir, differentiable=False), train=tiny_data(128))
        return replace(problem(device, budget_ms=budget_ms), network=network)


# ---------------------------------------------------------------- what defines each one


def test_optuna_never_ranks_an_infeasible_or_pruned_trial(tmp_path) -> None:  # type: ignore[no-untyped-def]
    candidates, study, _ = TestOptuna().run(tmp_path, trials=20)
    assert candidates == sorted(candidates, key=lambda c: -(c.accuracy or 0))
    ranked = {c.trial for c in candidates}
    over = [t.number for t in study.trials if t.constraints["budget"] > 0]
    assert over, "the sampler never explored over the budget: the check below would be empty"
    assert ranked.isdisjoint(over)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials if t.number in ranked)


def test_optuna_median_pruner_stops_trials_below_the_median(tmp_path) -> None:  # type: ignore[no-untyped-def]
    def evaluate(widths: Widths, report: Any) -> float:
        assert report is not None, "one objective with pruning on must report intermediate accuracy"
        acc = accuracy(widths)
        report(0, acc)  # the accuracy right after pruning: below the median, the trial stops here
        return acc

    strategy = get_strategy("optuna")
    s = strategy.study_settings(seed=0, trials=20)
    study = open_study(storage=f"sqlite:///{tmp_path / 'p.db'}", study_name="p", sampler=s.sampler,
                       directions=s.directions, pruner=s.pruner)  # fmt: skip
    p = problem(CountingDevice())
    run_strategy(strategy, SearchProblem(**{**p.__dict__, "evaluate": evaluate}), study=study, trials=20)
    assert optuna.trial.TrialState.PRUNED in [t.state for t in study.trials]
    assert trained(study) == 20  # --trials counts trained networks, pruned ones included


def test_optuna_trials_count_trained_networks_not_proposals(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, study, _ = TestOptuna().run(tmp_path, trials=6)
    over = [t for t in study.trials if t.constraints["budget"] > 0]
    assert over and not any(t.user_attrs["evaluated"] for t in over)
    assert trained(study) == 6 and len(study.trials) == 6 + len(over)


def test_optuna_two_objectives_front_is_non_dominated(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, study, _ = TestOptunaTwoObjectives().run(tmp_path, trials=16)
    assert len(study.directions) == 2
    front = study.best_trials
    assert front
    for t in front:
        dominated = [
            u for u in study.trials
            if u.values and u.values[0] >= t.values[0] and u.values[1] <= t.values[1]
            and (u.values[0] > t.values[0] or u.values[1] < t.values[1])
            and all(v <= 0 for v in u.constraints.values())
        ]  # fmt: skip
        assert not dominated


def test_flops_constrains_macs_to_the_widest_uniform_network_within_the_latency_budget(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from autoprune.search.strategies.uniform import widest_uniform_by_measurement

    candidates, study, _ = TestFlops().run(tmp_path)
    ladder, best = widest_uniform_by_measurement(problem(CountingDevice()), study)
    assert study.user_attrs["macs_budget"] == pytest.approx(macs(ladder[best]))
    assert all(macs(c.widths) <= study.user_attrs["macs_budget"] for c in candidates)


def test_uniform_is_the_widest_uniform_network_within_budget_by_measurement(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from autoprune.search.strategies.uniform import uniform_ladder

    candidates, _, device = TestUniform().run(tmp_path)
    ladder = uniform_ladder(SPACE)
    i = ladder.index(candidates[0].widths)
    assert latency(ladder[i]) <= BUDGET < latency(ladder[i - 1])
    assert device.timed <= 2 + len(ladder).bit_length()  # bisection, not a sweep
    assert all(candidates[k + 1].widths == ladder[i + k + 1] for k in range(len(candidates) - 1))


def test_uniform_refuses_a_budget_below_its_narrowest_network(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from autoprune.errors import BudgetError

    with pytest.raises(BudgetError, match="raise the budget"):
        TestUniform().run(tmp_path, budget_ms=0.05)


def test_knapsack_keeps_more_importance_than_uniform_at_the_same_budget(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "k").mkdir()
    (tmp_path / "u").mkdir()
    knap, _, _ = TestKnapsack().run(tmp_path / "k")
    uni, _, _ = TestUniform().run(tmp_path / "u")
    assert accuracy(knap[0].widths) > accuracy(uni[0].widths)
    # Fallbacks are narrower networks, in order.
    assert all(latency(a.widths) >= latency(b.widths) for a, b in itertools.pairwise(knap))


def test_knapsack_prunes_the_cheap_unimportant_group_first() -> None:
    from autoprune.search.allocation import greedy_path, kept_importance

    scores = {g.name: torch.ones(g.channels) for g in GROUPS}
    scores["c"] = torch.full((64,), 100.0)  # c is important everywhere...
    scores["f"] = torch.cat([torch.full((8,), 10.0), torch.full((28,), 0.01)])  # ...f only in 8 channels
    path = greedy_path(SPACE, kept_importance(SPACE, scores), latency, stop_ms=latency(SPACE.dense()) * 0.95)
    first_steps = {g for w_prev, w in itertools.pairwise(path) for g in w[0] if w[0][g] != w_prev[0][g]}
    assert "f" in first_steps and "c" not in first_steps


def test_unknown_strategy_and_options_name_the_fix() -> None:
    with pytest.raises(ConfigError, match="use one of"):
        get_strategy("annealing")
    with pytest.raises(ConfigError, match="drop them"):
        get_strategy("knapsack", objectives=2)
    with pytest.raises(ConfigError, match="objectives"):
        get_strategy("optuna", objectives=3)


def test_a_strategys_own_options_reach_it_and_no_other_strategy_takes_them() -> None:
    def config(strategy: str, **options: Any) -> SearchConfig:
        return SearchConfig(budget_ratio=0.5, strategy=strategy, strategy_options=options)

    assert strategy_options()["--fallbacks"].name == "fallbacks"
    for name in ("knapsack", "uniform", "gates", "droppruning", "halp", "screen"):
        assert strategy_class(name).from_config(config(name, fallbacks=1)).fallbacks.count == 1  # type: ignore[attr-defined]
        with pytest.raises(ConfigError, match="--fallbacks must be >= 0"):
            strategy_class(name).from_config(config(name, fallbacks=-1))
    owners = (
        "--fallbacks is an option of --strategy droppruning or gates or halp or knapsack or screen or uniform"
    )
    with pytest.raises(ConfigError, match=owners):
        strategy_class("optuna").from_config(config("optuna", fallbacks=1))
    with pytest.raises(ConfigError, match="nope, not of 'knapsack'"):
        strategy_class("knapsack").from_config(config("knapsack", nope=1))
    again = SearchConfig.from_dict(config("uniform", fallbacks=2).to_dict())
    assert again.strategy_options == {"fallbacks": 2}


def test_gates_refuse_a_predictor_that_is_not_differentiable_and_a_problem_without_a_network(
    tmp_path: Path,
) -> None:
    strategy = get_strategy("gates")
    s = strategy.study_settings(seed=0, trials=2)
    study = open_study(storage=f"sqlite:///{tmp_path / 'g.db'}", study_name="g", sampler=s.sampler,
                       directions=s.directions)  # fmt: skip
    flat = replace(problem(CountingDevice()), network=dense_network(tmp_path, differentiable=False))
    with pytest.raises(ConfigError, match="--predictor lpnet"):
        run_strategy(strategy, flat, study=study, trials=2)
    with pytest.raises(ConfigError, match=r"SearchProblem\.network"):
        run_strategy(strategy, problem(CountingDevice()), study=study, trials=2)
    assert not study.trials


def test_gates_trials_tune_the_outer_knobs_and_keep_what_they_trained(tmp_path: Path) -> None:
    candidates, study, device = TestGates().run(tmp_path, trials=3)
    assert device.timed == 0  # the search is by prediction; finalists are measured by the caller
    trials = study.trials
    assert len(trials) == 3 and all(set(t.params) == {"weight", "gate_lr", "min_ratio"} for t in trials)
    assert trials[0].params["min_ratio"] == SPACE.min_ratio  # the defaults run first
    assert len({tuple(t.params.values()) for t in trials}) == 3
    own = [c for c in candidates if c.trial is not None]
    assert own and candidates[: len(own)] == own  # every trial's own network before any fallback
    for c in own:
        assert c.start is not None
        module, scores = load_start(c.start, Tiny())
        t = study.trials[c.trial]
        assert t.user_attrs["widths"] == c.widths and set(scores) == set(c.widths)
        assert t.user_attrs["open_channels"].keys() == c.widths.keys() and t.user_attrs["gated_ms"] > 0
        # Fallbacks: the trial's network stepped down the grid, further under the budget, same weights.
        falls = [f for f in candidates[len(own) :] if f.start == c.start]
        assert len(falls) == len(t.user_attrs["fallbacks"]) >= 1
        assert all(f.predicted_ms < c.predicted_ms and f.predicted_ms == pytest.approx(latency(f.widths))
                   for f in falls)  # fmt: skip
        assert all(f.widths[k] <= c.widths[k] for f in falls for k in c.widths)
        before = dense_network(tmp_path).module.state_dict()
        assert any(not torch.equal(v, before[k]) for k, v in module.state_dict().items())  # retrained


class TestScreen(StrategyContract):
    name = "screen"
    options: ClassVar[dict[str, Any]] = {"rerank": 3}
    trials = 40

    def make_problem(self, device: CountingDevice, *, budget_ms: float, work_dir: Path) -> SearchProblem:
        return screen_problem(device, budget_ms=budget_ms)


def screen_problem(
    device: CountingDevice, *, budget_ms: float = BUDGET, tuned: Any = None, val_size: int = 1000
) -> SearchProblem:
    """The contract's problem with the law as the proxy, and as the fine-tune unless ``tuned``."""
    law = tuned or (lambda widths, epochs, seed: accuracy(widths))
    return replace(problem(device, budget_ms=budget_ms), proxy=accuracy, finetune=law, val_size=val_size)


def test_screen_candidates_use_the_budget_and_beat_uniform_on_the_law(tmp_path: Path) -> None:
    candidates, study, _ = TestScreen().run(tmp_path, trials=60)
    shares = [t.user_attrs["budget_share"] for t in study.trials]
    assert len(study.trials) == 60 and min(shares) >= 0.9 and max(shares) <= 1.0
    summary = study.user_attrs["summary"]
    assert summary["screened"] == 60 and summary["proxy_s_per_candidate"] is not None
    assert summary["rank_agreement"] == pytest.approx(1.0)  # the proxy is the law the rerank scores
    uniform = next(r["widths"] for r in summary["rerank"] if r["uniform"])
    assert "kept the non-uniform winner" in summary["guard"]
    assert candidates[0].widths != uniform and accuracy(candidates[0].widths) > accuracy(uniform)


def test_screen_returns_uniform_when_the_gain_is_within_the_noise(tmp_path: Path) -> None:
    """A fine-tune whose accuracy is the same for every network, plus seed noise: no real gain."""

    def tuned(widths: Widths, epochs: float, seed: int) -> float:
        return 0.8 + 0.01 * (seed % 2) + 1e-4 * accuracy(widths)

    strategy = get_strategy("screen", rerank=2)
    s = strategy.study_settings(seed=0, trials=20)
    study = open_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s", sampler=s.sampler,
                       directions=s.directions)  # fmt: skip
    candidates = run_strategy(strategy, screen_problem(CountingDevice(), tuned=tuned), study=study, trials=20)
    summary = study.user_attrs["summary"]
    assert "returned the uniform network" in summary["guard"]
    assert next(r["widths"] for r in summary["rerank"] if r["uniform"]) == candidates[0].widths


def test_screen_refuses_a_problem_without_proxy_or_finetune(tmp_path: Path) -> None:
    strategy = get_strategy("screen")
    s = strategy.study_settings(seed=0, trials=4)
    study = open_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s", sampler=s.sampler,
                       directions=s.directions)  # fmt: skip
    with pytest.raises(ConfigError, match=r"SearchProblem\.proxy"):
        run_strategy(strategy, problem(CountingDevice()), study=study, trials=4)


def test_projection_lands_within_the_budget_and_near_it() -> None:
    from autoprune.search.projection import project_to_budget, shape_from_offsets

    def batched(many: list[Widths]) -> list[float]:
        return [latency(w) for w in many]

    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        offsets = {grp.name: float(torch.rand(1, generator=g)) * 2 - 1 for grp in GROUPS}
        p = project_to_budget(SPACE, shape_from_offsets(offsets, min_ratio=0.25), batched, BUDGET)
        assert SPACE.contains(p.widths) and p.predicted_ms == pytest.approx(latency(p.widths))
        assert p.predicted_ms <= BUDGET
        # no single grid step up still fits: the budget is used as far as the grid allows
        for grp in GROUPS:
            c = SPACE.choices(grp)
            i = c.index(p.widths[grp.name])
            if i + 1 < len(c):
                assert latency({**p.widths, grp.name: c[i + 1]}) > BUDGET
    dense = project_to_budget(SPACE, {grp.name: 1.0 for grp in GROUPS}, batched, latency(SPACE.dense()))
    assert dense.widths == SPACE.dense()


def test_halp_prunes_in_steps_down_to_the_budget_and_zeroes_what_it_pruned(tmp_path: Path) -> None:
    candidates, study, device = TestHalp().run(tmp_path)
    assert device.timed == 0 and len(study.trials) == 1
    t = study.trials[0]
    assert t.user_attrs["steps"] == 3 and t.user_attrs["step_batches"] == [1, 2, 3]  # 3/4 of 4 batches
    targets, predicted = t.user_attrs["step_targets_ms"], t.user_attrs["step_predicted_ms"]
    dense_ms = latency(SPACE.dense())
    assert targets == pytest.approx([dense_ms * (BUDGET / dense_ms) ** (k / 3) for k in (1, 2, 3)])
    assert all(p <= target for p, target in zip(predicted, targets, strict=True))
    assert dense_ms > predicted[0] > predicted[1] > predicted[2] == t.user_attrs["predicted_ms"]
    steps = [SPACE.dense(), *t.user_attrs["step_widths"]]
    assert all(b[k] <= a[k] for a, b in itertools.pairwise(steps) for k in a)  # never grows back
    best = candidates[0]
    assert best.trial == 0 and best.widths == steps[-1] and best.predicted_ms <= BUDGET
    module, scores = load_start(best.start, Tiny())
    for name, width in best.widths.items():
        kept = torch.topk(scores[name], width).indices
        pruned = torch.ones(len(scores[name]), dtype=torch.bool).index_fill(0, kept, False)
        assert float(scores[name][kept].min()) > max(scores[name][pruned].tolist(), default=-1.0)
        conv, bn = getattr(module, name), getattr(module, f"{name}_bn")
        assert not conv.weight[pruned].any() and not bn.weight[pruned].any() and not bn.bias[pruned].any()
        assert conv.weight[kept].abs().sum(dim=(1, 2, 3)).min() > 0  # trained, not zeroed
    # Fallbacks: narrower networks down the greedy path from the final widths, pruned from its weights.
    falls = candidates[1:]
    assert falls and all(f.start == best.start and f.predicted_ms < best.predicted_ms for f in falls)
    assert all(f.widths[k] <= best.widths[k] for f in falls for k in best.widths)


def test_halp_importance_is_taylor_of_the_coupled_layers_re_estimated_at_every_step(tmp_path: Path) -> None:
    """|Σ g·w| over a group's coupled parameters, per batch, averaged since the last step; each step
    keeps the most important of its own fresh estimate."""
    import torch.nn.functional as F

    from autoprune.graph import ChannelGraph
    from autoprune.search.strategies.halp._prune import HalpSettings, TaylorMasks, halp_prune

    torch.manual_seed(0)
    net = Tiny(residual=True)  # e and f couple: one group "e" over e, e_bn, f, f_bn
    groups = ChannelGraph(net, EXAMPLE).groups
    batches = [(x, y) for x, y in torch.utils.data.DataLoader(tiny_data(64), batch_size=32)]

    def taylor(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        ref = copy.deepcopy(net).train()
        F.cross_entropy(ref(x), y).backward()
        out = {}
        for g in groups:
            layers = ("e", "e_bn", "f", "f_bn") if g.name == "e" else (g.name, f"{g.name}_bn")
            gw = [
                (p.grad * p).reshape(p.shape[0], -1).sum(1)
                for n in layers
                for p in getattr(ref, n).parameters()
            ]
            out[g.name] = torch.stack(gw).sum(0).abs()
        return out

    masked = TaylorMasks(copy.deepcopy(net), EXAMPLE, groups).train()
    expected = [taylor(x, y) for x, y in batches]
    for x, y in batches:
        F.cross_entropy(masked(x), y).backward()
    got = masked.importance()
    for g in groups:  # per batch |Σ g·w|, then averaged: not |Σ| of the summed gradients
        assert torch.allclose(
            got[g.name], (expected[0][g.name] + expected[1][g.name]) / 2, rtol=1e-3, atol=1e-7
        )
    masked.reset()
    x, y = batches[1]
    F.cross_entropy(masked(x), y).backward()
    assert all(
        torch.allclose(masked.importance()[g.name], expected[1][g.name], rtol=1e-3, atol=1e-7) for g in groups
    )

    space = WidthSpace(tuple(groups), min_ratio=0.25)

    def predict(w: Widths) -> float:
        return sum(w[g.name] / g.channels for g in groups)

    result = halp_prune(
        copy.deepcopy(net), EXAMPLE, space, tiny_data(256), predict_ms=predict,
        budget_ms=0.5 * predict(space.dense()), epochs=2.0, lr=0.05,
        settings=HalpSettings(steps=3, prune_fraction=0.75),
    )  # fmt: skip
    # Fresh: each step averages the batches since the one before, on the network as that one left it.
    assert [s.batch for s in result.steps] == [2, 4, 6]  # of 8: the last 2 recover
    assert [s.averaged for s in result.steps] == [2, 2, 2]
    for before, step in itertools.pairwise(result.steps):
        assert any(not torch.allclose(before.importance[k], v) for k, v in step.importance.items())
    keep = {g.name: set(range(g.channels)) for g in groups}
    for step in result.steps:
        for name, gone in step.removed.items():
            keep[name] -= set(gone)
            assert len(keep[name]) == step.widths[name]
            if gone and keep[name]:  # the step dropped the least important by its own estimate
                assert max(float(step.importance[name][c]) for c in gone) <= min(
                    float(step.importance[name][c]) for c in keep[name]
                )
    assert {k: sorted(v) for k, v in keep.items()} == result.keep


def test_screen_reranks_beside_the_predicted_uniform_when_no_uniform_network_measures_within(
    tmp_path: Path,
) -> None:
    """A host so slow that every network measures over the budget: the search still ranks its candidates
    (the finalists' measurement, not the rerank, is where such a budget is refused)."""

    def slow(widths_list: list[Widths]) -> list[Timing]:
        return [Timing(3 * latency(w), 1.0) for w in widths_list]

    strategy = get_strategy("screen", rerank=2)
    s = strategy.study_settings(seed=0, trials=12)
    study = open_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s", sampler=s.sampler,
                       directions=s.directions)  # fmt: skip
    slow_problem = replace(screen_problem(CountingDevice()), measure=slow)
    candidates = run_strategy(strategy, slow_problem, study=study, trials=12)
    uniform = next(r["widths"] for r in study.user_attrs["summary"]["rerank"] if r["uniform"])
    assert latency(uniform) <= BUDGET and candidates


def test_screen_calibrates_the_rerank_on_the_device_so_the_winner_fits_the_budget(tmp_path: Path) -> None:
    """A predictor biased by shape, as LPNet was on vgg11_bn: non-uniform networks measure 8 % over their
    prediction, uniform ones 8 % under. Uncorrected, the winner (projected onto the predicted budget)
    measures over it; after the calibration every reranked network measures within
    ``budget / (1 + tolerance)^2`` and the uniform network is the widest that does."""
    uniforms = {tuple(sorted(w.items())) for w in uniform_ladder(SPACE)}

    def factor(w: Widths) -> float:
        return 0.92 if tuple(sorted(w.items())) in uniforms else 1.08

    def biased(widths_list: list[Widths]) -> list[Timing]:
        return [Timing(factor(w) * latency(w), 1.0) for w in widths_list]

    strategy = get_strategy("screen", rerank=2)
    s = strategy.study_settings(seed=0, trials=30)
    study = open_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s", sampler=s.sampler,
                       directions=s.directions)  # fmt: skip
    tol = 0.02
    prob = replace(screen_problem(CountingDevice()), measure=biased, tolerance=tol)
    candidates = run_strategy(strategy, prob, study=study, trials=30)
    summary = study.user_attrs["summary"]
    target = BUDGET / (1 + tol) ** 2
    rows = summary["calibration"]
    assert rows[0]["bias"] == pytest.approx(0.92) and all(r["bias"] == pytest.approx(1.08) for r in rows[1:])
    assert all(r["target_ms"] == pytest.approx(target) for r in rows)
    reranked = [r["widths"] for r in summary["rerank"]]
    assert all(factor(w) * latency(w) <= target for w in reranked)
    assert candidates[0].widths in reranked  # the winner is one of them: it meets the budget measured
    uniform = next(r["widths"] for r in summary["rerank"] if r["uniform"])
    ladder = uniform_ladder(SPACE)
    i = ladder.index(uniform)
    assert i == 0 or 0.92 * latency(ladder[i - 1]) > target  # the widest uniform network that fits
    # After the rerank, the narrower uniform networks (calibrated too), before the uncalibrated screened rest.
    n = len(reranked)
    assert [c.widths for c in candidates[n : n + 2]] == ladder[i + 1 : i + 3]
    # A rerun resumes from the study: nothing is timed again.
    device = CountingDevice()
    again = run_strategy(strategy, replace(prob, measure=device), study=study, trials=30)
    assert [c.widths for c in again] == [c.widths for c in candidates] and device.timed == 0


def test_every_registered_strategy_has_a_contract_class() -> None:
    assert set(list_strategies()) <= covered(StrategyContract, "name")
