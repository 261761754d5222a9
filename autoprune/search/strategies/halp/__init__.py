"""``halp``: HALP (Shen et al., NeurIPS 2022) as HALP. One fine-tune of the network (``--finetune-epochs``)
prunes it progressively: ``--halp-steps`` (10) times, evenly over the first ``--halp-prune-fraction``
(0.5) of its batches, the channels' Taylor importance averaged over the batches since the last step is
traded against the predictor's latency by ``search.allocation``.s greedy solver, down to a target that falls
geometrically from the dense network's predicted latency to the budget (``halp._prune``);
pruned channels are masked and never return. The rest of the fine-tune recovers the pruned network.

Unlike ``knapsack``, which prunes once by the criterion's scores on the dense network before any
training, each step here re-estimates importance on the network as it is being pruned and trained, and
the network is fine-tuned as it shrinks. Unlike the paper: widths are on the search's grid, latency is
the search's predictor (HALP's lookup table only when the predictor is the lookup table), and the
knapsack is the greedy one.

One trial, deterministic for the network's seed (``--trials`` is ignored beyond one; a rerun resumes).
Its retrained weights (pruned channels zeroed) and keep-scores are kept in the run directory
(``halp/``), so the finalist is pruned to exactly the channels it kept; the trial's value is that
network's validation accuracy. As ``knapsack`` does, narrower fallbacks follow (``--fallbacks``): from
the final widths down the greedy path on the last importance, pruned from the same weights, for when
the network measures over the budget.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import optuna

from autoprune.errors import BudgetError, ConfigError
from autoprune.search.strategies._base import (
    FALLBACKS,
    Fallbacks,
    SearchProblem,
    SearchStrategy,
    StrategyOption,
    register_strategy,
)
from autoprune.search.strategies.halp._prune import HalpSettings, halp_prune, kept_value
from autoprune.search.study import (
    Candidate,
    ranked_candidates,
    save_start,
    train_trials,
    with_trial_fallbacks,
)


@register_strategy
class HalpStrategy(SearchStrategy):
    name = "halp"
    default_trials = 1
    trial_means = "networks pruned progressively (one: deterministic)"
    options = (
        StrategyOption("--halp-steps", "halp_steps", int,
                       "halp: pruning steps during the fine-tune, each a knapsack on fresh Taylor "
                       "importance, from dense to the budget (default 10)"),
        StrategyOption("--halp-prune-fraction", "halp_prune_fraction", float,
                       "halp: the first fraction of --finetune-epochs the pruning steps spread over, in "
                       "(0, 1]; the rest recovers (default 0.5)"),
        FALLBACKS,
    )  # fmt: skip

    def __init__(
        self,
        *,
        halp_steps: int = 10,
        halp_prune_fraction: float = 0.5,
        fallbacks: int = 8,
        fallback_step: float = 0.03,
    ) -> None:
        self.settings = HalpSettings(steps=halp_steps, prune_fraction=halp_prune_fraction)
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
        if math.isinf(problem.budget_ms):
            raise ConfigError("halp prunes to a latency budget: pass --budget-ms or --budget-ratio")
        if problem.predict_ms(space.narrowest()) > problem.budget_ms:
            raise BudgetError(
                f"halp: no network of the grid is predicted within {problem.budget_ms:.4f} ms: "
                "raise the budget"
            )
        s = self.settings
        self.keep_settings(study, {"steps": s.steps, "prune_fraction": s.prune_fraction})

        def objective(trial: optuna.Trial) -> float:
            result = halp_prune(
                copy.deepcopy(network.module), network.example, space, network.train,
                predict_ms=problem.predict_ms, budget_ms=problem.budget_ms, epochs=network.epochs,
                lr=network.lr, seed=network.seed, settings=s, augment=network.augment,
            )  # fmt: skip
            last = result.steps[-1]
            widths, predicted = last.widths, float(problem.predict_ms(last.widths))
            scores = result.scores()
            start = save_start(
                network.trial_file(self.name, study.study_name, trial.number), result.module, scores
            )
            value = kept_value(space, result.importance, result.keep)
            falls = self.fallbacks.ladder(problem, value, start=widths)
            trial.set_user_attr("seed", network.seed)
            trial.set_user_attr("widths", widths)
            trial.set_user_attr("predicted_ms", predicted)
            trial.set_user_attr("steps", len(result.steps))  # fewer than --halp-steps on few batches
            trial.set_user_attr("step_batches", [st.batch for st in result.steps])
            trial.set_user_attr("step_targets_ms", [st.target_ms for st in result.steps])
            trial.set_user_attr("step_predicted_ms", [st.predicted_ms for st in result.steps])
            trial.set_user_attr("step_widths", [st.widths for st in result.steps])
            trial.set_user_attr("start", start)
            trial.set_user_attr("fallbacks", [[w, float(ms)] for w, ms in falls if w != widths])
            trial.set_user_attr("evaluated", True)
            problem.constrain(trial, widths, predicted)
            return network.accuracy(result.module, widths, scores)

        train_trials(study, objective, trials=1, on_trial=on_trial)  # deterministic: one network
        return with_trial_fallbacks(study, ranked_candidates(study, space))
