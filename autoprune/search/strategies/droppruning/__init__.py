"""``droppruning``: Drop Pruning (seed 003) at channel level. Each trial prunes the network iteratively
from dense to the target widths, fine-tuning between steps, and at each step drops out channels sampled
among the least important (``--drop-out`` p_out) and drops in pruned ones, restored from the dense
weights (``--drop-in`` p_in); ``droppruning._schedule`` has the schedule.

The target widths are what the budget allows, by ``search.allocation.ladder`` (as ``knapsack``) on the
problem's criterion scores, the widest network on it predicted within the budget (it keeps more
importance than a uniform one). Every trial has the same target; trials differ in the seed of the
stochastic drops (``--trials`` counts them, seeds 0, 1, ...), the trial's value is the validation
accuracy of the network pruned from its fine-tuned weights, and the most accurate trial ranks first.
With p_in = p_out = 0 the schedule is deterministic, so one trial runs whatever ``--trials`` says.
``--drop-steps`` prune / fine-tune steps share the ``--finetune-epochs`` of a trial equally.

A trial's fine-tuned weights and keep-scores are kept in the run directory (``droppruning/``), so the
finalist is pruned from them to exactly the channels the trial kept. As ``knapsack`` does, the ladder's
narrower networks follow as fallbacks (``--fallbacks``), pruned from the best trial's weights (the
largest final filters of its kept channels): they cost only a measurement, for when the target measures
over the budget.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import optuna
import torch

from autoprune import training
from autoprune.errors import BudgetError
from autoprune.graph import Widths
from autoprune.search.allocation import kept_importance
from autoprune.search.gating import GatedNetwork
from autoprune.search.strategies._base import (
    FALLBACKS,
    Fallbacks,
    SearchProblem,
    SearchStrategy,
    StrategyOption,
    register_strategy,
)
from autoprune.search.strategies.droppruning._schedule import DropResult, DropSettings, drop_prune
from autoprune.search.study import (
    Candidate,
    ranked_candidates,
    save_start,
    train_trials,
)


@register_strategy
class DropPruningStrategy(SearchStrategy):
    name = "droppruning"
    trial_means = "seeds of the drops, each training the network"
    options = (
        StrategyOption("--drop-out", "p_out", float,
                       "droppruning: how far each step's drop-out strays from the least important channels, "
                       "in [0, 1) (0: exactly the least important; default 0.5)"),
        StrategyOption("--drop-in", "p_in", float,
                       "droppruning: probability that each pruned channel returns at a step, restored from "
                       "the dense weights, in [0, 1) (default 0.1)"),
        StrategyOption("--drop-steps", "steps", int,
                       "droppruning: prune / fine-tune steps from dense to the target widths (default 4)"),
        FALLBACKS,
    )  # fmt: skip

    def __init__(
        self,
        *,
        p_out: float = 0.5,
        p_in: float = 0.1,
        steps: int = 4,
        fallbacks: int = 8,
        fallback_step: float = 0.03,
    ) -> None:
        self.settings = DropSettings(p_out=p_out, p_in=p_in, steps=steps)
        self.fallbacks = Fallbacks(fallbacks, fallback_step)

    def run(
        self,
        problem: SearchProblem,
        *,
        study: optuna.Study,
        trials: int,
        on_trial: Callable[[int, int], None] | None = None,
    ) -> list[Candidate]:
        network = self.network_of(problem)
        space = problem.space
        steps = self.fallbacks.ladder(problem, kept_importance(space, problem.scores))
        if not steps:
            raise BudgetError(
                f"droppruning: no network of the grid is predicted within {problem.budget_ms:.4f} ms: "
                "raise the budget"
            )
        target, target_ms = steps[0]
        s = self.settings
        self.keep_settings(study, {"p_out": s.p_out, "p_in": s.p_in, "steps": s.steps})
        if s.p_in == 0 and s.p_out == 0:
            trials = 1  # deterministic: every seed would train the same network
        per_step = network.epochs / s.steps

        def fine_tune(gated: GatedNetwork, step: int) -> None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(network.seed + step)
                training.train(
                    gated, network.train, epochs=per_step, lr=network.lr, seed=network.seed + step,
                    parameters=gated.net.parameters(), augment=network.augment,
                )  # fmt: skip

        def objective(trial: optuna.Trial) -> float:
            seed = trial.number
            result = drop_prune(
                copy.deepcopy(network.module), network.example, space.groups, target,
                dense=network.module, fine_tune=fine_tune, settings=s, seed=seed,
            )  # fmt: skip
            scores = result.scores()
            start = save_start(
                network.trial_file(self.name, study.study_name, trial.number),
                result.module,
                scores,
            )
            _record(trial, result, seed=seed, widths=target, predicted_ms=float(target_ms), start=start)
            problem.constrain(trial, target, float(target_ms))
            return network.accuracy(result.module, target, scores)

        train_trials(study, objective, trials=trials, on_trial=on_trial)
        ranked = ranked_candidates(study, space)
        best = ranked[0].start
        return ranked + [Candidate(w, float(ms), start=best) for w, ms in steps[1:]]


def _record(
    trial: optuna.Trial, result: DropResult, *, seed: int, widths: Widths, predicted_ms: float, start: str
) -> None:
    """What a trial keeps: its seed, widths and prediction, the channels kept, the widths and per group
    how many channels came back and went at each step, and the file of its trained network."""
    attrs = {
        "seed": seed, "widths": widths, "predicted_ms": predicted_ms, "keep": result.keep,
        "step_widths": [st.widths for st in result.steps],
        "dropped_in": [_counts(st.dropped_in) for st in result.steps],
        "dropped_out": [_counts(st.dropped_out) for st in result.steps],
        "start": start, "evaluated": True,
    }  # fmt: skip
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def _counts(channels: dict[str, list[int]]) -> dict[str, int]:
    return {k: len(v) for k, v in channels.items()}
