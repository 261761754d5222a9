"""``gates``: W-Gates. Each trial trains the network jointly with weight-dependent gates under the
differentiable predictor's latency loss (``gates._train``): which filters to keep and how many per
group are learnt by gradient. The gates' network is rounded to the width grid (the highest-scored
channels kept, stepped down the grid if the rounding is predicted over the budget) and its validation
accuracy, pruned from the jointly trained weights with BatchNorm recalibrated, is the trial's value.

Optuna (TPE, on the search's storage: resumable, many workers) tunes the outer knobs: the latency loss's
weight λ, the gates' learning rate and the least fraction of its channels each group keeps. The first
trial runs the defaults. ``--trials`` counts joint trainings, ``--finetune-epochs`` is the length of
each. A trial's jointly trained weights and gate scores are kept in the run directory, so the finalist
chosen by measurement is pruned from them, as the trial was.

The gates find networks unlike the profile's random ones, where the predictor errs most. So, as
``knapsack`` does, each trial also proposes fallbacks: its network scaled down alike in every group (the
gates' allocation kept) to be predicted 3 %, 6 %, ... under the budget. They are ranked after every
trial's own network and cost only a measurement.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable

import optuna

from autoprune.errors import ConfigError
from autoprune.graph import Widths
from autoprune.search.strategies._base import (
    FALLBACKS,
    DenseNetwork,
    Fallbacks,
    SearchProblem,
    SearchStrategy,
    StudySettings,
    register_strategy,
)
from autoprune.search.strategies.gates._train import GateSettings, train_gates
from autoprune.search.study import (
    Candidate,
    ranked_candidates,
    save_start,
    train_trials,
    with_trial_fallbacks,
)
from autoprune.search.workers import study_lock


@register_strategy
class GatesStrategy(SearchStrategy):
    name = "gates"
    trial_means = "joint trainings of the network and its gates"
    needs_gradients = True
    options = (FALLBACKS,)

    def __init__(
        self,
        *,
        weight: tuple[float, float] = (0.2, 5.0),
        gate_lr: tuple[float, float] = (0.003, 0.1),
        max_min_ratio: float = 0.5,
        defaults: GateSettings | None = None,
        fallbacks: int = 8,
        fallback_step: float = 0.03,
    ) -> None:
        if not (0 < weight[0] <= weight[1] and 0 < gate_lr[0] <= gate_lr[1] and 0 < max_min_ratio <= 1):
            raise ConfigError(f"gates: bad search ranges weight={weight} gate_lr={gate_lr}")
        self.weight, self.gate_lr, self.max_min_ratio = weight, gate_lr, max_min_ratio
        self.defaults = defaults or GateSettings()
        self.fallbacks = Fallbacks(fallbacks, fallback_step)

    def study_settings(self, *, seed: int, trials: int) -> StudySettings:
        startup = max(2, min(5, trials // 3))
        return StudySettings(optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup), ("maximize",))

    def run(
        self,
        problem: SearchProblem,
        *,
        study: optuna.Study,
        trials: int,
        on_trial: Callable[[int, int], None] | None = None,
    ) -> list[Candidate]:
        _network(problem)  # a predictor without gradients is refused before any work
        space = problem.space
        low = space.min_ratio
        with study_lock(study):  # one worker of a shared study enqueues it
            if not study.trials:
                d = self.defaults
                study.enqueue_trial(
                    {
                        "weight": min(max(d.weight, self.weight[0]), self.weight[1]),
                        "gate_lr": min(max(d.gate_lr, self.gate_lr[0]), self.gate_lr[1]),
                        "min_ratio": low,
                    }
                )

        # The gates start from the widest uniform network predicted within the budget: feasible, and
        # inside the profile's region (at the dense corner a learnt predictor's slope can even be wrong).
        start_widths = space.widest_uniform_within(problem.budget_ms, problem.predict_ms)

        objective = functools.partial(self._trial, problem=problem, study=study, start_widths=start_widths)
        train_trials(study, objective, trials=trials, on_trial=on_trial)
        return with_trial_fallbacks(study, ranked_candidates(study, space))

    def _trial(
        self, trial: optuna.Trial, problem: SearchProblem, study: optuna.Study, start_widths: Widths
    ) -> float:
        """One trial: gate settings drawn, the network trained with its gates from ``start_widths``, its
        grid network, weights and fallbacks recorded, its accuracy returned."""
        network, space = _network(problem), problem.space
        low = space.min_ratio
        high = max(low, self.max_min_ratio)
        settings = GateSettings(
            weight=trial.suggest_float("weight", *self.weight, log=True),
            gate_lr=trial.suggest_float("gate_lr", *self.gate_lr, log=True),
            min_ratio=trial.suggest_float("min_ratio", low, high),
            warmup=self.defaults.warmup,
            pull=self.defaults.pull,
            settle=self.defaults.settle,
            hidden=self.defaults.hidden,
        )
        assert network.latency is not None  # checked by _network
        result = train_gates(
            copy.deepcopy(network.module), network.example, space, network.train,
            latency=network.latency, budget_ms=problem.budget_ms, epochs=network.epochs,
            lr=network.lr, settings=settings, seed=network.seed, start=start_widths,
            augment=network.augment,
        )  # fmt: skip
        widths = result.widths
        predicted = float(problem.predict_ms(widths))
        start = save_start(
            network.trial_file(self.name, study.study_name, trial.number),
            result.module,
            result.scores,
        )
        trial.set_user_attr("widths", widths)
        trial.set_user_attr("predicted_ms", predicted)
        trial.set_user_attr("gated_ms", result.latency_ms)  # the gates' own count, before the grid
        trial.set_user_attr("open_channels", result.counts)
        every = max(1, len(result.trace) // 10)  # the gates' predicted latency along the training
        trial.set_user_attr("trace_ms", [round(ms, 6) for ms in result.trace[::every]])
        trial.set_user_attr("start", start)
        steps = self.fallbacks.scaled(problem, widths)
        trial.set_user_attr("fallbacks", [[w, ms] for w, ms in steps])
        trial.set_user_attr("evaluated", True)
        problem.constrain(trial, widths, predicted)
        return network.accuracy(result.module, widths, result.scores)


def _network(problem: SearchProblem) -> DenseNetwork:
    network = GatesStrategy.network_of(problem)
    if network.latency is None:
        raise ConfigError(
            f"strategy 'gates' trains against a differentiable latency predictor and '{network.predictor}' "
            "is not one: fit one with `autoprune fit PROFILE --predictor lpnet`"
        )
    return network
