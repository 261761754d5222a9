"""The Optuna study every strategy records its networks in: one storage (sqlite file or any SQLAlchemy
URL), resumable, readable in optuna-dashboard. A trial's parameters are grid indices (see ``WidthSpace``);
its user attributes hold the widths, the predicted latency and whether it was trained."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from autoprune.errors import BudgetError
from autoprune.graph import Widths
from autoprune.search.space import WidthSpace

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
Report = Callable[[int, float], None]
"""``report(step, accuracy)``: an intermediate accuracy of a trial; may raise ``optuna.TrialPruned``."""
Evaluate = Callable[[Widths, Report | None], float]
"""``evaluate(widths, report) -> accuracy``: prune, recover, fine-tune briefly, score on validation."""


@dataclass(frozen=True)
class Candidate:
    """A network a strategy proposes, most preferred first in its ranking. ``accuracy`` is the
    validation accuracy after the short fine-tune, or None for a strategy that trains nothing."""

    widths: Widths
    predicted_ms: float
    accuracy: float | None = None
    trial: int | None = None


def open_study(
    *, storage: str, study_name: str, sampler: optuna.samplers.BaseSampler, directions: Sequence[str],
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:  # fmt: skip
    """Create, or load to resume, the study. Runs that die leave RUNNING trials; with a heartbeat they
    are failed and retried once when the study is resumed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats
        rdb = optuna.storages.RDBStorage(
            storage,
            heartbeat_interval=30,
            grace_period=90,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
        )
    return optuna.create_study(
        storage=rdb,
        study_name=study_name,
        sampler=sampler,
        pruner=pruner,
        directions=[optuna.study.StudyDirection[d.upper()] for d in directions],
        load_if_exists=True,
    )


def finished(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that ran to the end or were stopped by the pruner."""
    return study.get_trials(deepcopy=False, states=FINISHED)


def trained(study: optuna.Study) -> int:
    """Finished trials whose network was trained (within the constraint): what ``--trials`` counts."""
    return sum(bool(t.user_attrs.get("evaluated")) for t in finished(study))


def accuracy_of(trial: FrozenTrial) -> float:
    return float((trial.values or [0.0])[0])


def is_feasible(trial: FrozenTrial) -> bool:
    """Trained, and within the constraint the strategy searched under."""
    return bool(trial.user_attrs.get("evaluated")) and all(v <= 0 for v in trial.constraints.values())


def ranked_candidates(study: optuna.Study, space: WidthSpace) -> list[Candidate]:
    """Complete, feasible trials, most accurate first, one per distinct widths."""
    seen: set[tuple[int, ...]] = set()
    out = []
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    for t in sorted(trials, key=lambda t: (-accuracy_of(t), t.number)):
        if not is_feasible(t):
            continue
        widths = space.widths(t.params)
        key = tuple(widths.values())
        if key not in seen:
            seen.add(key)
            out.append(Candidate(widths, float(t.user_attrs["predicted_ms"]), accuracy_of(t), t.number))
    if not out:
        raise BudgetError(
            f"no trial of study '{study.study_name}' was trained within the budget: "
            "run more --trials or raise the budget"
        )
    return out
