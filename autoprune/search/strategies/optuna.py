"""``optuna``: per-group widths searched by Optuna under the predicted-latency constraint.

Each trial proposes widths; the constraint (predicted latency minus the budget; <= 0 is feasible; one per
target under several, ``--target``) is set with ``Trial.set_constraint``, which TPE and NSGA-II both
read. Trials over the constraint are not trained: their accuracy is recorded as 0.0, they are never
candidates, and they do not count towards ``--trials``, which counts trained networks. One objective:
TPE maximises validation accuracy, and Optuna's median pruner stops a trial whose accuracy right after
pruning and BatchNorm recalibration is below the median of earlier trials at that step. Two objectives:
NSGA-II on (accuracy, predicted latency); the study's best trials are the Pareto front.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna

from autoprune.config import SearchConfig
from autoprune.errors import ConfigError
from autoprune.graph import Widths
from autoprune.search.strategies._base import SearchProblem, SearchStrategy, StudySettings, register_strategy
from autoprune.search.study import Candidate, Report, ranked_candidates
from autoprune.search.workers import claim, fill_study, study_lock

PROPOSALS_PER_TRIAL = 10


@register_strategy
class OptunaStrategy(SearchStrategy):
    name = "optuna"

    def __init__(self, *, objectives: int = 1, prune_trials: bool = True) -> None:
        if objectives not in (1, 2):
            raise ConfigError(f"--objectives must be 1 (accuracy) or 2 (accuracy, latency), got {objectives}")
        self.objectives = objectives
        self.prune_trials = prune_trials and objectives == 1  # Optuna's pruners are single-objective

    @classmethod
    def from_config(cls, config: SearchConfig) -> OptunaStrategy:
        cls.check_tolerance(config)
        options = cls.given_options(config)
        return cls(objectives=config.objectives, prune_trials=config.prune_trials, **options)

    def study_settings(self, *, seed: int, trials: int) -> StudySettings:
        startup = max(3, min(10, trials // 3))
        if self.objectives == 2:
            sampler = optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(20, trials // 3)))
            return StudySettings(sampler, ("maximize", "minimize"))
        pruner = optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0)
        return StudySettings(
            optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup),
            ("maximize",),
            pruner if self.prune_trials else optuna.pruners.NopPruner(),
        )

    def constraint(
        self, problem: SearchProblem, study: optuna.Study
    ) -> tuple[Callable[[Widths], float], float]:
        """What the search is constrained on, and its limit: the predicted latency and the budget (under
        several targets the binding latency: the first network is the widest uniform one within it)."""
        return problem.predict_ms, problem.budget_ms

    def constrain(
        self, trial: optuna.Trial, problem: SearchProblem, widths: Widths, cost: float, limit: float
    ) -> bool:
        """Set the trial's constraints (one per latency target); whether they hold."""
        return problem.constrain(trial, widths, cost)

    def run(
        self,
        problem: SearchProblem,
        *,
        study: optuna.Study,
        trials: int,
        on_trial: Callable[[int, int], None] | None = None,
    ) -> list[Candidate]:
        cost, limit = self.constraint(problem, study)
        space = problem.space
        with study_lock(study):  # one worker of a shared study enqueues it
            if not study.trials:  # start from the widest uniform network within the limit: feasible at once
                study.enqueue_trial(space.params(space.widest_uniform_within(limit, cost)))
        multi = self.objectives == 2

        def objective(trial: optuna.Trial) -> float | tuple[float, float]:
            widths = space.suggest(trial)
            predicted = float(problem.predict_ms(widths))
            trial.set_user_attr("widths", widths)
            trial.set_user_attr("predicted_ms", predicted)
            feasible = self.constrain(trial, problem, widths, float(cost(widths)), limit)
            if feasible:
                claim(study, trial, trials)  # StudyFull when every network is trained or claimed
            trial.set_user_attr("evaluated", feasible)
            accuracy = problem.evaluate(widths, self._reporter(trial)) if feasible else 0.0
            return (accuracy, predicted) if multi else accuracy

        # --trials counts trained networks (every worker's): a proposal predicted over the limit costs one
        # prediction, so it does not use up the budget of trials (at most PROPOSALS_PER_TRIAL proposals each).
        most = PROPOSALS_PER_TRIAL * trials
        fill_study(study, objective, trials=trials, max_trials=most, on_trial=on_trial)
        return ranked_candidates(study, space)

    def _reporter(self, trial: optuna.Trial) -> Report | None:
        if not self.prune_trials:
            return None

        def report(step: int, accuracy: float) -> None:
            trial.report(accuracy, step)
            if trial.should_prune():
                raise optuna.TrialPruned()

        return report
