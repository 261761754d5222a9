"""``playprune``: Play and Prune (seed 004), the fastest network within an accuracy tolerance
(``--max-accuracy-drop P``: percentage points of validation top-1 below the dense network).

From the dense network, the game (``playprune._game``) alternates a pruning step (remove a
fraction ``rate`` of the kept channels, least important per ms first, on the width grid) with a
fine-tune of the masked network (``GatedNetwork.fix``: the network's code untouched, pruned channels
exactly zero) of ``--finetune-epochs`` from the last accepted weights, then scores the network, pruned
from those weights with BatchNorm recalibrated, on the validation split. Within the tolerance the step
is accepted and the rate rises; otherwise the weights roll back and the rate falls. ``--trials`` bounds
the steps (each one trial).

Every step is an Optuna trial (user attrs ``widths``, ``predicted_ms``, ``rate``, ``accepted`` and the
game's state after it; constraints ``tolerance`` and ``budget``), and every accepted network's weights
are kept (``save_start``) with scores that make its kept channels the top ones, so a rerun resumes the
game where it stopped and a finished game is not replayed. Candidates are the accepted networks
predicted within the budget (when one is given as well), fastest first by prediction: the game's last
network first, the ones before it as fallbacks. ``autoprune search`` then keeps the fastest by
measurement.

Without ``--max-accuracy-drop`` the strategy refuses to run: a game needs a tolerance to play against.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import optuna
from optuna.trial import TrialState
from torch import Tensor, nn

from autoprune import training
from autoprune.config import SearchConfig
from autoprune.errors import BudgetError, ConfigError
from autoprune.graph import Widths, keep_top
from autoprune.search.gating import GatedNetwork
from autoprune.search.strategies._base import (
    DenseNetwork,
    SearchProblem,
    SearchStrategy,
    StrategyOption,
    register_strategy,
)
from autoprune.search.strategies.playprune._game import (
    GameState,
    Pruner,
    RateSettings,
    controller_update,
    within_tolerance,
)
from autoprune.search.study import Candidate, load_start, save_start, trained

NEEDS_TOLERANCE = "strategy 'playprune' prunes to an accuracy tolerance: pass --max-accuracy-drop P"


@register_strategy
class PlayPruneStrategy(SearchStrategy):
    name = "playprune"
    trial_means = "controller steps, each fine-tuning the network (an upper bound)"
    tolerance = True
    options = (
        StrategyOption(
            "--pp-rate", "rate", float,
            "playprune: first pruning rate, the fraction of kept channels each step removes (default 0.1; "
            "x1.5 after an accepted step, /2 after a refused one)",
        ),
    )  # fmt: skip

    def __init__(self, *, rate: float = 0.1, grow: float = 1.5, shrink: float = 0.5) -> None:
        self.settings = RateSettings(rate=rate, grow=grow, shrink=shrink)

    @classmethod
    def from_config(cls, config: SearchConfig) -> PlayPruneStrategy:
        if config.max_accuracy_drop is None:
            raise ConfigError(NEEDS_TOLERANCE)
        return cls(**cls.given_options(config))

    def run(
        self,
        problem: SearchProblem,
        *,
        study: optuna.Study,
        trials: int,
        on_trial: Callable[[int, int], None] | None = None,
    ) -> list[Candidate]:
        network = self.network_of(problem)
        max_drop = problem.max_accuracy_drop
        if max_drop is None:
            raise ConfigError(NEEDS_TOLERANCE)
        _record_tolerance(study, max_drop)
        dense_accuracy = _dense_accuracy(study, problem, network)
        space, scores = problem.space, problem.scores
        pruner = Pruner(space, scores, problem.predict_ms)
        done = _steps(study)
        state = (
            GameState.from_dict(done[-1].user_attrs["state"]) if done
            else GameState(space.dense(), self.settings.rate)
        )  # fmt: skip
        if study.user_attrs.get("game_over"):
            state = replace(state, done=True)
        net = copy.deepcopy(network.module)
        if state.start is not None:
            net, _ = load_start(state.start, network.module)
        game = _Game(state, copy.deepcopy(net.state_dict()), pruner.propose(state))
        step = _Step(self, problem, study, game, net, pruner, dense_accuracy, max_drop)

        report = on_trial or (lambda done, total: None)
        report(min(trained(study), trials), trials)

        def progress(s: optuna.Study, _t: optuna.trial.FrozenTrial) -> None:
            report(min(trained(s), trials), trials)
            if trained(s) >= trials or game.next is None:
                s.stop()

        if game.next is None and not state.done:
            study.set_user_attr("game_over", True)
        elif not state.done and trained(study) < trials:
            study.optimize(step, n_trials=trials - trained(study), callbacks=[progress], catch=())
        return _candidates(study, problem, dense_accuracy)


@dataclass
class _Game:
    """The game between steps: the controller's state, the last accepted weights, the next proposal."""

    state: GameState
    weights: dict[str, Tensor]
    next: Widths | None


def _dense_accuracy(study: optuna.Study, problem: SearchProblem, network: DenseNetwork) -> float:
    """The dense network's accuracy, scored once and kept in the study: as every step is (pruned to the
    dense widths, BatchNorm recalibrated) unless the problem brings it."""
    if "dense_accuracy" not in study.user_attrs:
        dense = problem.dense_accuracy
        if dense is None:
            dense = network.accuracy(network.module, problem.space.dense(), problem.scores)
        study.set_user_attr("dense_accuracy", float(dense))
    return float(study.user_attrs["dense_accuracy"])


@dataclass
class _Step:
    """One trial of the game: fine-tune the proposal from the last accepted weights, score it, let the
    controller judge, and record it on the trial."""

    strategy: PlayPruneStrategy
    problem: SearchProblem
    study: optuna.Study
    game: _Game
    net: nn.Module
    pruner: Pruner
    dense_accuracy: float
    max_drop: float

    def __call__(self, trial: optuna.Trial) -> float:
        game, net, problem = self.game, self.net, self.problem
        network, space, scores = self.strategy.network_of(problem), problem.space, problem.scores
        state, proposal = game.state, game.next
        assert proposal is not None  # the game stops when none is left
        net.load_state_dict(game.weights)
        gated = GatedNetwork(net, network.example, space.groups)
        gated.fix(keep_top(scores, proposal))
        training.train(
            gated, network.train, epochs=network.epochs, lr=network.lr,
            seed=network.seed + trial.number, parameters=list(net.parameters()), augment=network.augment,
        )  # fmt: skip
        gated.remove()
        accuracy = float(network.accuracy(net, proposal, scores))
        ok = within_tolerance(accuracy, self.dense_accuracy, self.max_drop)
        start = None
        if ok:
            path = network.trial_file(self.strategy.name, self.study.study_name, trial.number)
            start = save_start(path, net, scores)
            game.weights = copy.deepcopy(net.state_dict())
        after = controller_update(
            state, proposal, accepted=ok, settings=self.strategy.settings, step=trial.number, start=start
        )
        game.next = self.pruner.propose(after)
        if game.next is None:  # the game is over: nothing left to try from the last accepted
            after = replace(after, done=True)
            self.study.set_user_attr("game_over", True)
        game.state = after
        predicted = float(problem.predict_ms(proposal))
        drop = 100.0 * (self.dense_accuracy - accuracy)
        for key, value in {
            "widths": proposal, "predicted_ms": predicted, "rate": state.rate, "accepted": ok,
            "accuracy_drop_points": drop, "evaluated": True, "start": start, "state": after.to_dict(),
        }.items():  # fmt: skip
            trial.set_user_attr(key, value)
        trial.set_constraint("tolerance", drop - self.max_drop)
        if math.isfinite(problem.budget_ms):
            problem.constrain(trial, proposal, predicted)
        else:  # no budget: always held
            trial.set_constraint("budget", -1.0)
        return accuracy


def _steps(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The game's completed steps, in order."""
    return sorted(
        (
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if "state" in t.user_attrs
        ),
        key=lambda t: t.number,
    )


def _candidates(study: optuna.Study, problem: SearchProblem, dense_accuracy: float) -> list[Candidate]:
    """Accepted networks predicted within the budget, fastest first (the later step first on a tie); the
    dense network when no step was accepted."""
    accepted = [t for t in _steps(study) if t.user_attrs["accepted"]]
    out = [
        Candidate(
            {k: int(v) for k, v in t.user_attrs["widths"].items()}, float(t.user_attrs["predicted_ms"]),
            float((t.values or [0.0])[0]), t.number, t.user_attrs["start"],
        )
        for t in sorted(accepted, key=lambda t: (float(t.user_attrs["predicted_ms"]), -t.number))
        if float(t.user_attrs["predicted_ms"]) <= problem.budget_ms
    ]  # fmt: skip
    if not accepted:
        dense = problem.space.dense()
        predicted = float(problem.predict_ms(dense))
        if predicted <= problem.budget_ms:
            out = [Candidate(dense, predicted, dense_accuracy)]
    if not out:
        raise BudgetError(
            f"no network within --max-accuracy-drop {problem.max_accuracy_drop} was predicted within "
            f"{problem.budget_ms:.4g} ms ({len(accepted)} accepted steps): raise the tolerance or the "
            "budget, or run more --trials"
        )
    return out


def _record_tolerance(study: optuna.Study, max_drop: float) -> None:
    recorded = study.user_attrs.get("max_accuracy_drop")
    if recorded is None:
        study.set_user_attr("max_accuracy_drop", float(max_drop))
    elif abs(float(recorded) - max_drop) > 1e-9:
        raise ConfigError(
            f"study '{study.study_name}' was run with --max-accuracy-drop {recorded:g}, not {max_drop:g}: "
            "pass --study NEW_NAME (or a new --out) for a new search"
        )
