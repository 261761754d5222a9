"""Play and Prune (``playprune``): the pruning-rate controller, the accuracy tolerance, and the command
line. The synthetic law of the strategy contract (accuracy = kept importance, latency linear in the
widths) judges the steps, so the game's outcome is exact; the contract itself is in
test_strategies.py (``TestPlayPrune``)."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import torch
from contracts.strategy import SCORES, SPACE, CountingDevice, accuracy, dense_network, latency, problem

from autoprune.cli import build_parser, main
from autoprune.config import SearchConfig
from autoprune.errors import ConfigError
from autoprune.search import Candidate, get_strategy, load_start, open_study, run_strategy, strategy_class
from autoprune.search.strategies.playprune._game import (
    GameState,
    Pruner,
    RateSettings,
    controller_update,
    within_tolerance,
)

DENSE = accuracy(SPACE.dense())


def play(max_drop: float, *, steps: int = 40, rate: float = 0.1) -> GameState:
    """The game on the law: what the strategy's loop does, with the law's accuracy in place of a fine-tune."""
    settings, pruner = RateSettings(rate=rate), Pruner(SPACE, SCORES, latency)
    state = GameState(SPACE.dense(), rate)
    for step in range(steps):
        proposal = pruner.propose(state)
        if proposal is None:
            return replace(state, done=True)
        ok = within_tolerance(accuracy(proposal), DENSE, max_drop)
        state = controller_update(state, proposal, accepted=ok, settings=settings, step=step)
    return state


def test_the_rate_rises_after_an_accepted_step_and_falls_after_a_refused_one() -> None:
    settings = RateSettings(rate=0.1)
    pruner = Pruner(SPACE, SCORES, latency)
    state = GameState(SPACE.dense(), 0.1)
    first = pruner.propose(state)
    assert first is not None and SPACE.contains(first)
    removed = sum(SPACE.dense().values()) - sum(first.values())
    assert 0 < removed <= 0.3 * sum(SPACE.dense().values())  # about the rate, snapped to the grid
    accepted = controller_update(state, first, accepted=True, settings=settings, step=0)
    assert accepted.rate == pytest.approx(0.15) and accepted.widths == first and accepted.refused == ()
    second = pruner.propose(accepted)
    assert second is not None and all(second[k] <= first[k] for k in first)  # nested: only narrower
    refused = controller_update(accepted, second, accepted=False, settings=settings, step=1)
    assert refused.rate == pytest.approx(0.075) and refused.widths == first  # rolled back
    third = pruner.propose(refused)
    assert third is not None and third != second  # never the refused network again
    assert sum(third.values()) > sum(second.values())  # a smaller step at the lower rate
    # The rate stays within its bounds however long a run of outcomes.
    s = state
    for ok in [True] * 10 + [False] * 12:
        s = controller_update(s, first, accepted=ok, settings=settings)
    assert s.history[9] == settings.max_rate and s.rate == settings.min_rate


def test_the_game_keeps_every_accepted_network_within_the_tolerance_and_ends_when_nothing_is_left() -> None:
    for max_drop in (1.0, 5.0, 15.0):
        state = play(max_drop)
        assert state.done  # ended by the controller, not the step limit
        assert within_tolerance(accuracy(state.widths), DENSE, max_drop)
        assert latency(state.widths) < latency(SPACE.dense())
        # Every finest step from the result breaks the tolerance (or no group can step down).
        for g in SPACE.groups:
            lower = [c for c in SPACE.choices(g) if c < state.widths[g.name]]
            if lower:
                assert not within_tolerance(accuracy({**state.widths, g.name: lower[-1]}), DENSE, max_drop)


def test_a_tighter_tolerance_never_gives_a_faster_network_on_the_law() -> None:
    drops = [0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 10.0, 15.0, 20.0, 30.0]
    for rate in (0.05, 0.1, 0.2):
        ms = [latency(play(d, rate=rate).widths) for d in drops]
        assert all(a >= b - 1e-12 for a, b in itertools.pairwise(ms)), (rate, ms)
        assert ms[0] > ms[-1]


def _strategy_run(tmp_path: Path, max_drop: float, trials: int) -> tuple[list[Candidate], optuna.Study]:
    strategy = get_strategy("playprune")
    s = strategy.study_settings(seed=0, trials=trials)
    study = open_study(storage=f"sqlite:///{tmp_path / 'pp.db'}", study_name="pp", sampler=s.sampler,
                       directions=s.directions)  # fmt: skip
    network = replace(dense_network(tmp_path), epochs=0.5)
    p = replace(
        problem(CountingDevice(), budget_ms=float("inf")), network=network, max_accuracy_drop=max_drop
    )
    return run_strategy(strategy, p, study=study, trials=trials), study


def test_the_strategy_ranks_accepted_networks_fastest_first_and_keeps_their_weights(tmp_path: Path) -> None:
    candidates, study = _strategy_run(tmp_path, 15.0, trials=5)
    steps = study.trials
    assert len(steps) == 5 and study.user_attrs["max_accuracy_drop"] == 15.0
    accepted = [t for t in steps if t.user_attrs["accepted"]]
    assert [c.trial for c in candidates] == sorted(
        (t.number for t in accepted), key=lambda n: (steps[n].user_attrs["predicted_ms"], -n)
    )
    rates = [t.user_attrs["rate"] for t in steps]
    for before, after, t in zip(rates, rates[1:], steps, strict=False):  # the controller, as recorded
        assert after == pytest.approx(
            min(0.5, 1.5 * before) if t.user_attrs["accepted"] else max(0.01, before / 2)
        )
    for c in candidates:
        assert within_tolerance(accuracy(c.widths), DENSE, 15.0) and c.start is not None
        module, scores = load_start(c.start, dense_network(tmp_path).module)
        assert set(scores) == set(c.widths)
        before = dense_network(tmp_path).module.state_dict()
        assert any(not torch.equal(v, before[k]) for k, v in module.state_dict().items())  # fine-tuned
    # A tighter tolerance (same seed) never ends faster.
    (tmp_path / "tight").mkdir()
    tight, _ = _strategy_run(tmp_path / "tight", 3.0, trials=5)
    assert tight[0].predicted_ms >= candidates[0].predicted_ms


def test_playprune_needs_a_tolerance_and_other_strategies_refuse_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--max-accuracy-drop P"):
        strategy_class("playprune").from_config(SearchConfig(budget_ratio=0.5, strategy="playprune"))
    for name in ("optuna", "knapsack", "gates"):
        with pytest.raises(ConfigError, match="use --strategy playprune"):
            strategy_class(name).from_config(SearchConfig(max_accuracy_drop=0.5, strategy=name))
    config = SearchConfig(max_accuracy_drop=0.5, strategy_options={"rate": 0.2})
    assert strategy_class("playprune").from_config(config).settings.rate == 0.2  # type: ignore[attr-defined]
    s = get_strategy("playprune").study_settings(seed=0, trials=1)
    study = open_study(storage=f"sqlite:///{tmp_path / 'x.db'}", study_name="x", sampler=s.sampler,
                       directions=s.directions)  # fmt: skip
    with pytest.raises(ConfigError, match="--max-accuracy-drop P"):
        no_tolerance = replace(problem(CountingDevice()), network=dense_network(tmp_path))
        run_strategy(get_strategy("playprune"), no_tolerance, study=study, trials=1)


def _search_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["search", "resnet20", "--checkpoint", str(tmp_path / "none.pt"), "--data", "digits",
            "--predictor", str(tmp_path / "none.pt"), "--out", str(tmp_path / "s"), *extra]  # fmt: skip


def test_the_command_line_takes_a_tolerance_instead_of_a_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = build_parser().parse_args(_search_args(tmp_path, "--max-accuracy-drop", "0.5", "--pp-rate", "0.2"))
    assert args.budget_ms is None and args.budget_ratio is None and args.strategy is None
    assert args.max_accuracy_drop == 0.5 and args.strategy_rate == 0.2

    def fails(extra: list[str], expected: str) -> None:
        assert main(_search_args(tmp_path, *extra)) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1, err

    fails([], "--budget-ms X or --budget-ratio R) or an accuracy tolerance (--max-accuracy-drop P)")
    fails(["--max-accuracy-drop", "0.5", "--strategy", "optuna"], "use --strategy playprune")
    fails(["--budget-ratio", "0.5", "--strategy", "playprune"], "pass --max-accuracy-drop P")
    fails(["--max-accuracy-drop", "120"], "(0, 100)")
    # No budget, a tolerance: the default strategy takes it and the search goes on to its inputs.
    fails(["--max-accuracy-drop", "0.5"], "does not exist: run autoprune fit")
    assert not (tmp_path / "s").exists()  # refused before any work


@pytest.mark.slow
def test_the_command_line_searches_to_a_tolerance_without_a_budget(
    tiny_run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s"
    args = ["search", "resnet20", "--checkpoint", str(tiny_run["checkpoint"]), "--data", "digits",
            "--predictor", str(tiny_run["predictor"]), "--out", str(out), "--max-accuracy-drop", "5",
            "--trials", "2", "--finetune-epochs", "0.05", "--final-epochs", "0.05",
            "--calibration-batches", "2"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    summary = json.loads((out / "search.json").read_text())
    assert summary["strategy"] == "playprune" and summary["budget_ms"] is None
    assert "tolerance 5 points" in capsys.readouterr().err  # the comparison table's title
