"""Per-group widths searched with Optuna under a predicted-latency constraint.

Each trial proposes widths; the predictor's latency minus the budget is the trial's ``latency``
constraint (``Trial.set_constraint``, Optuna 5's successor of ``constraints_func``; <= 0 is
feasible). Trials predicted over budget are not trained: their value is
recorded as 0.0 and they are ranked as infeasible by the constraint, never chosen.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from autoprune.errors import BudgetError, ConfigError
from autoprune.graph import Widths
from autoprune.search.space import WidthSpace


def _violation(trial: FrozenTrial) -> float:
    return float(trial.constraints.get("latency", float("inf")))


def open_study(*, storage: str, study_name: str, seed: int, trials: int) -> optuna.Study:
    """Create, or load to resume, the study. Runs that die leave RUNNING trials; with a heartbeat
    they are failed and retried once when the study is resumed."""
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", optuna.exceptions.ExperimentalWarning
        )  # heartbeats are "experimental"
        rdb = optuna.storages.RDBStorage(
            storage,
            heartbeat_interval=30,
            grace_period=90,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
        )
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(3, min(10, trials // 3)))
    return optuna.create_study(
        storage=rdb, study_name=study_name, sampler=sampler, direction="maximize", load_if_exists=True
    )


def run_search(
    study: optuna.Study,
    space: WidthSpace,
    *,
    evaluate: Callable[[Widths], float],
    predict_ms: Callable[[Widths], float],
    budget_ms: float,
    trials: int,
    on_trial: Callable[[int, int], None] | None = None,
) -> None:
    """Run trials until the study holds ``trials`` finished ones (a rerun continues)."""
    recorded = study.user_attrs.get("budget_ms")
    if recorded is None:
        study.set_user_attr("budget_ms", budget_ms)
        # Start from the widest uniform network the predictor says fits: the search begins feasible.
        study.enqueue_trial(space.params(space.widest_uniform_within(budget_ms, predict_ms)))
    elif abs(recorded - budget_ms) > 1e-9 * max(1.0, budget_ms):
        raise ConfigError(
            f"study '{study.study_name}' was run with a budget of {recorded:.4g} ms, not {budget_ms:.4g} ms: "
            "pass --study NEW_NAME (or a new --out) for a new search"
        )

    def objective(trial: optuna.Trial) -> float:
        widths = space.suggest(trial)
        predicted = float(predict_ms(widths))
        trial.set_user_attr("predicted_ms", predicted)
        trial.set_constraint("latency", predicted - budget_ms)
        trial.set_user_attr("evaluated", predicted <= budget_ms)
        return evaluate(widths) if predicted <= budget_ms else 0.0

    def completed(s: optuna.Study) -> int:
        return len(s.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    report = on_trial or (lambda done, total: None)
    report(completed(study), trials)
    remaining = trials - completed(study)
    if remaining > 0:
        callback = lambda s, _t: report(completed(s), trials)  # noqa: E731
        study.optimize(objective, n_trials=remaining, callbacks=[callback], catch=())


@dataclass(frozen=True)
class Candidate:
    trial: int
    widths: Widths
    accuracy: float
    predicted_ms: float


def ranked_candidates(study: optuna.Study, space: WidthSpace) -> list[Candidate]:
    """Trained, predicted-feasible trials, most accurate first, one per distinct widths."""
    seen: set[tuple[int, ...]] = set()
    out = []
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    for t in sorted(trials, key=lambda t: (-(t.value or 0.0), t.number)):
        if not t.user_attrs.get("evaluated") or _violation(t) > 0:
            continue
        widths = space.widths(t.params)
        key = tuple(widths.values())
        if key not in seen:
            seen.add(key)
            out.append(
                Candidate(t.number, widths, float(t.value or 0.0), float(t.user_attrs["predicted_ms"]))
            )
    if not out:
        raise BudgetError(
            f"no trial of study '{study.study_name}' was predicted within the budget: "
            "run more --trials or raise the budget"
        )
    return out
