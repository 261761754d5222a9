"""Drop Pruning: the cubic schedule lands on the target, drop-out removes exactly what each step needs
(the least important with p_out = 0), dropped-in channels come back with their dense weights, and with
p_in = p_out = 0 the schedule is plain deterministic iterative pruning."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from tiny_net import EXAMPLE, Tiny, tiny_data
from torch import Tensor

from autoprune import training
from autoprune.errors import ConfigError
from autoprune.graph import ChannelGraph, keep_top
from autoprune.search import get_strategy, load_start, open_study, run_strategy
from autoprune.search.gating import GatedNetwork
from autoprune.search.strategies.droppruning._schedule import (
    DropResult,
    DropSettings,
    cubic_schedule,
    drop_in,
    drop_out,
    drop_prune,
)

DATA = tiny_data(64)
TARGET = {"a": 8, "b": 16, "c": 24, "d": 8, "e": 16, "f": 16}


def _dense() -> Tiny:
    torch.manual_seed(0)
    return Tiny()


Log = list[tuple[dict[str, Tensor], dict[str, Tensor]]]


def _run(settings: DropSettings, seed: int = 0, log: Log | None = None) -> DropResult:
    """drop_prune on the tiny CNN, each step fine-tuned by one SGD step; ``log`` gets each step's state
    before and after its fine-tune."""
    dense = _dense()
    groups = ChannelGraph(copy.deepcopy(dense), EXAMPLE).groups

    def fine_tune(gated: GatedNetwork, step: int) -> None:
        before = copy.deepcopy(gated.net.state_dict())
        training.train(gated, DATA, epochs=1, lr=0.05, seed=step, parameters=gated.net.parameters())
        if log is not None:
            log.append((before, copy.deepcopy(gated.net.state_dict())))

    net = copy.deepcopy(dense)
    return drop_prune(
        net, EXAMPLE, groups, TARGET, dense=dense, fine_tune=fine_tune, settings=settings, seed=seed
    )


def test_the_cubic_schedule_prunes_most_early_and_ends_exactly_at_the_target() -> None:
    for dense, target, steps in [(64, 24, 4), (20, 16, 3), (36, 16, 1), (12, 12, 4), (64, 16, 10)]:
        widths = cubic_schedule(dense, target, steps)
        assert len(widths) == steps and widths[-1] == target
        assert all(a >= b for a, b in zip([dense, *widths], widths, strict=False))
        assert all(target <= w <= dense for w in widths)
    first = cubic_schedule(64, 24, 4)
    assert first == [41, 29, 25, 24]  # 24 + 40 * (3/4)^3 = 40.875, 24 + 40/8, 24 + 40/64
    assert 64 - first[0] > first[0] - first[1] > first[1] - first[2]


def test_drop_out_removes_exactly_the_count_the_least_important_with_p_out_zero() -> None:
    importance = torch.tensor([5.0, 1.0, 4.0, 0.5, 3.0, 2.0, 6.0, 7.0])
    kept = [0, 1, 2, 3, 4, 5, 6]  # 7 is pruned already
    g = torch.Generator().manual_seed(0)
    assert drop_out(kept, importance, 3, p_out=0.0, pool=2.0, generator=g) == [1, 3, 5]
    pool = {3, 1, 5, 4, 2, 0}  # the 2 x 3 least important kept channels
    drawn = set()
    for seed in range(30):
        out = drop_out(
            kept, importance, 3, p_out=0.8, pool=2.0, generator=torch.Generator().manual_seed(seed)
        )
        assert len(out) == len(set(out)) == 3 and set(out) <= pool
        drawn.add(tuple(out))
    assert len(drawn) > 1, "p_out > 0 never strayed from the least important"
    assert drop_out(kept, importance, 0, p_out=0.5, pool=2.0, generator=g) == []


def test_drop_in_returns_each_pruned_channel_with_its_probability() -> None:
    g = torch.Generator().manual_seed(0)
    pruned = list(range(2000))
    back = drop_in(pruned, p_in=0.3, limit=2000, generator=g)
    assert 0.25 < len(back) / 2000 < 0.35 and set(back) <= set(pruned)
    assert len(drop_in(pruned, p_in=0.3, limit=5, generator=g)) == 5
    assert drop_in(pruned, p_in=0.0, limit=2000, generator=g) == []


def test_settings_are_validated_in_one_line() -> None:
    for bad in ({"p_out": 1.0}, {"p_in": -0.1}, {"steps": 0}):
        with pytest.raises(ConfigError, match="droppruning: --drop"):
            DropSettings(**bad)  # type: ignore[arg-type]


def test_dropped_in_channels_come_back_with_their_dense_weights_and_the_end_is_the_target() -> None:
    log: Log = []
    result = _run(DropSettings(p_out=0.5, p_in=0.3, steps=4), log=log)
    assert {k: len(v) for k, v in result.keep.items()} == TARGET
    dense = _dense().state_dict()
    channels = {g.name: g.channels for g in ChannelGraph(_dense(), EXAMPLE).groups}
    keep = {n: set(range(c)) for n, c in channels.items()}
    returned, restored_state = 0, 0
    for t, st in enumerate(result.steps):
        for name, back in st.dropped_in.items():
            pruned_before = set(range(channels[name])) - keep[name]
            assert set(back) <= pruned_before  # only channels pruned at an earlier step return
            assert set(st.dropped_out[name]) <= keep[name]  # drop-out takes channels kept before the step
            keep[name] = (keep[name] - set(st.dropped_out[name])) | set(back)
            assert len(keep[name]) == st.widths[name]
            if not back:
                continue
            returned += len(back)
            idx = torch.as_tensor(back)
            for key in (f"{name}.weight", f"{name}_bn.weight", f"{name}_bn.bias", f"{name}_bn.running_var"):
                assert torch.equal(log[t][0][key][idx], dense[key][idx]), key  # restored from dense...
                restored_state += not torch.equal(log[t - 1][1][key][idx], dense[key][idx])  # ...not left
    assert returned > 0, "p_in = 0.3 over four steps brought no channel back"
    assert restored_state > 0, "the restored channels' weights were dense already: the check is empty"
    assert {n: sorted(k) for n, k in keep.items()} == result.keep
    assert result.steps[-1].widths == TARGET
    stayed = {(n, c) for st in result.steps for n, back in st.dropped_in.items() for c in back}
    assert any(c in result.keep[n] for n, c in stayed), "no dropped-in channel was kept at the end"


def test_without_drops_it_is_deterministic_iterative_pruning_of_the_smallest_filters() -> None:
    settings = DropSettings(p_out=0.0, p_in=0.0, steps=3)
    result = _run(settings, seed=0)
    again = _run(settings, seed=7)
    assert again.keep == result.keep
    assert all(not any(st.dropped_in.values()) for st in result.steps)

    # The same schedule written out plainly: each step removes the smallest filters still kept.
    dense = _dense()
    net = copy.deepcopy(dense)
    gated = GatedNetwork(net, EXAMPLE, ChannelGraph(copy.deepcopy(dense), EXAMPLE).groups)
    keep = {g.name: list(range(g.channels)) for g in gated.groups}
    for t in range(3):
        norms = gated.filter_norms()
        for g in gated.groups:
            width = cubic_schedule(g.channels, TARGET[g.name], 3)[t]
            ranked = sorted(keep[g.name], key=lambda c, n=norms[g.name]: (float(n[c]), c))
            keep[g.name] = sorted(ranked[len(ranked) - width :])
        gated.fix(keep)
        training.train(gated, DATA, epochs=1, lr=0.05, seed=t, parameters=net.parameters())
    assert keep == result.keep
    for key, value in net.state_dict().items():
        assert torch.equal(value, result.module.state_dict()[key]), key
    assert keep_top(result.scores(), TARGET) == result.keep


# ------------------------------------------------------------------------- the strategy


def _strategy_run(tmp_path: Path, trials: int = 2, **options: object):  # type: ignore[no-untyped-def]
    from contracts.strategy import CountingDevice, dense_network, problem

    strategy = get_strategy("droppruning", **options)
    s = strategy.study_settings(seed=0, trials=trials)
    study = open_study(storage=f"sqlite:///{tmp_path / 'd.db'}", study_name="d", sampler=s.sampler,
                       directions=s.directions)  # fmt: skip
    p = replace(problem(CountingDevice()), network=dense_network(tmp_path, differentiable=False))
    return run_strategy(strategy, p, study=study, trials=trials), study


def test_trials_are_seeds_of_the_schedule_and_the_finalist_is_pruned_to_the_trials_channels(
    tmp_path: Path,
) -> None:
    from contracts.strategy import BUDGET, SCORES, SPACE, latency

    from autoprune.search.allocation import kept_importance, ladder

    candidates, study = _strategy_run(tmp_path, trials=2, steps=2, p_in=0.3)
    target, _ = ladder(SPACE, kept_importance(SPACE, SCORES), latency, budget_ms=BUDGET)[0]
    trials = study.trials
    assert [t.user_attrs["seed"] for t in trials] == [0, 1]
    assert trials[0].user_attrs["keep"] != trials[1].user_attrs["keep"]  # the seeds drop differently
    best = candidates[0]
    assert best.widths == target and best.trial is not None and best.start is not None
    attrs = study.trials[best.trial].user_attrs
    assert len(attrs["dropped_in"]) == len(attrs["dropped_out"]) == len(attrs["step_widths"]) == 2
    assert attrs["step_widths"][-1] == target
    _, scores = load_start(best.start, Tiny())
    assert keep_top(scores, best.widths) == {k: list(v) for k, v in attrs["keep"].items()}
    # Fallbacks: narrower, from the same weights, their channels among the trial's kept ones.
    falls = candidates[1:]
    assert falls and all(f.start == best.start and f.predicted_ms < best.predicted_ms for f in falls)
    for f in falls:
        assert all(set(v) <= set(attrs["keep"][k]) for k, v in keep_top(scores, f.widths).items())


def test_deterministic_settings_run_one_trial_and_other_settings_refuse_the_study(tmp_path: Path) -> None:
    _, study = _strategy_run(tmp_path, trials=3, steps=2, p_in=0.0, p_out=0.0)
    assert len(study.trials) == 1
    with pytest.raises(ConfigError, match="droppruning: this study ran with"):
        _strategy_run(tmp_path, trials=3, steps=3, p_in=0.0, p_out=0.0)


def test_droppruning_refuses_a_problem_without_a_network(tmp_path: Path) -> None:
    from contracts.strategy import CountingDevice, problem

    strategy = get_strategy("droppruning")
    s = strategy.study_settings(seed=0, trials=1)
    study = open_study(storage=f"sqlite:///{tmp_path / 'n.db'}", study_name="n", sampler=s.sampler,
                       directions=s.directions)  # fmt: skip
    with pytest.raises(ConfigError, match=r"SearchProblem\.network"):
        run_strategy(strategy, problem(CountingDevice()), study=study, trials=1)


def test_restore_copies_only_the_named_channels_of_every_member() -> None:
    dense = _dense()
    net = copy.deepcopy(dense)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
        net.b_bn.running_mean.add_(1.0)
    gated = GatedNetwork(net, EXAMPLE, ChannelGraph(copy.deepcopy(dense), EXAMPLE).groups)
    gated.restore(dense, {"b": [3, 5]})
    for key in ("b.weight", "b_bn.weight", "b_bn.bias", "b_bn.running_mean"):
        now, was = net.state_dict()[key], dense.state_dict()[key]
        assert torch.equal(now[[3, 5]], was[[3, 5]]), key
        assert not torch.equal(now[[0, 4]], was[[0, 4]]), key
    assert not torch.equal(net.c.weight, dense.c.weight)  # the next layer is left as it was
