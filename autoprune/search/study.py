"""The Optuna study every strategy records its networks in: one storage (sqlite file or any SQLAlchemy
URL), resumable, readable in optuna-dashboard. A trial's parameters are grid indices (see ``WidthSpace``);
its user attributes hold the widths, the predicted latency and whether it was trained."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from torch import Tensor, nn

from autoprune._io import atomic_write
from autoprune.errors import BudgetError, ConfigError
from autoprune.graph import Widths
from autoprune.search.space import PARAM_PREFIX, WidthSpace
from autoprune.search.workers import claim, fill_study, open_storage, register

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
Report = Callable[[int, float], None]
"""``report(step, accuracy)``: an intermediate accuracy of a trial; may raise ``optuna.TrialPruned``."""
Evaluate = Callable[[Widths, Report | None], float]
"""``evaluate(widths, report) -> accuracy``: prune, recover, fine-tune briefly, score on validation."""


@dataclass(frozen=True)
class Candidate:
    """A network a strategy proposes, most preferred first in its ranking. ``accuracy`` is the
    validation accuracy after the short fine-tune, or None for a strategy that trains nothing.
    ``start`` is the file (``save_start``) of the retrained dense weights and channel scores it is pruned
    from, for a strategy that trains the network itself; None: the searched network with the criterion's
    scores."""

    widths: Widths
    predicted_ms: float
    accuracy: float | None = None
    trial: int | None = None
    start: str | None = None


def save_start(path: str | Path, module: nn.Module, scores: Mapping[str, Tensor]) -> str:
    """Keep a retrained dense network's weights and channel scores (atomically); returns the path."""
    payload = {"state_dict": module.state_dict(), "scores": {k: v.detach().cpu() for k, v in scores.items()}}
    return str(atomic_write(path, lambda p: torch.save(payload, p)))


def load_start(path: str | Path, like: nn.Module) -> tuple[nn.Module, dict[str, Tensor]]:
    """A copy of ``like`` with the weights ``save_start`` kept in ``path``, and its channel scores."""
    if not Path(path).is_file():
        raise ConfigError(
            f"'{path}', the retrained weights of a chosen trial, is missing: run the search again in the "
            "run directory that trained it (or with a new --study)"
        )
    payload = torch.load(path, map_location="cpu", weights_only=True)
    module = copy.deepcopy(like)
    module.load_state_dict(payload["state_dict"])
    return module.eval(), dict(payload["scores"])


@contextmanager
def _storage_errors(storage: str) -> Iterator[None]:
    """SQLAlchemy's and Optuna's failures to open ``storage`` as one line naming the fix."""
    import sqlalchemy.exc

    scheme = storage.split(":", 1)[0].split("+", 1)[0]
    try:
        yield
    except (sqlalchemy.exc.NoSuchModuleError, sqlalchemy.exc.ArgumentError):
        raise ConfigError(
            f"--storage '{storage}' is not a storage URL autoprune can use: pass sqlite:///FILE.db or "
            "postgresql://USER:PASSWORD@HOST/DB, or journal:///FILE.log (several workers on one machine)"
        ) from None
    except ImportError:
        extra = ' (pip install "autoprune[postgres]")' if scheme == "postgresql" else ""
        raise ConfigError(
            f"--storage '{storage}' needs a database driver that is not installed: install the driver for "
            f"{scheme}{extra}, or use sqlite:///FILE.db"
        ) from None
    except sqlalchemy.exc.OperationalError as exc:
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else type(exc).__name__
        raise ConfigError(
            f"--storage '{storage}' cannot be opened ({reason}): check that the server is running and "
            "the URL, user and database are right (for sqlite, that the folder exists)"
        ) from None


def check_storage(storage: str) -> None:
    """Open ``storage`` once, so a bad URL, a missing driver or an unreachable server fails in one line
    before a run directory is written."""
    with _storage_errors(storage):
        open_storage(storage, "")  # a sqlite file is taken here: a second worker is refused before any work


def open_study(
    *, storage: str, study_name: str, sampler: optuna.samplers.BaseSampler, directions: Sequence[str],
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:  # fmt: skip
    """Create, or load to resume, the study, shared by every worker that opens it (``workers``). Runs
    that die leave RUNNING trials; those that were training are failed and retried once (``workers``)."""
    with _storage_errors(storage):
        backend, lock = open_storage(storage, study_name)
    return register(
        optuna.create_study(
            storage=backend,
            study_name=study_name,
            sampler=sampler,
            pruner=pruner,
            directions=[optuna.study.StudyDirection[d.upper()] for d in directions],
            load_if_exists=True,
        ),
        lock,
    )


def finished(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that ran to the end or were stopped by the pruner."""
    return study.get_trials(deepcopy=False, states=FINISHED)


def trained(study: optuna.Study) -> int:
    """Finished trials whose network was trained (within the constraint): what ``--trials`` counts."""
    return sum(bool(t.user_attrs.get("evaluated")) for t in finished(study))


def train_trials(
    study: optuna.Study, objective: Callable[[optuna.Trial], float], *, trials: int,
    on_trial: Callable[[int, int], None] | None = None,
) -> None:  # fmt: skip
    """Run ``objective``, each trial of which trains a network, until the study holds ``trials`` trained
    networks (a resumed study counts those it has; several workers count each other's), reporting
    ``(trained, trials)`` after each."""

    def claimed_objective(trial: optuna.Trial) -> float:
        claim(study, trial, trials)
        return objective(trial)

    fill_study(study, claimed_objective, trials=trials, on_trial=on_trial)


def accuracy_of(trial: FrozenTrial) -> float:
    return float((trial.values or [0.0])[0])


def is_feasible(trial: FrozenTrial) -> bool:
    """Trained, and within the constraint the strategy searched under."""
    return bool(trial.user_attrs.get("evaluated")) and all(v <= 0 for v in trial.constraints.values())


def trial_widths(trial: FrozenTrial, space: WidthSpace) -> Widths:
    """A trial's network: its parameters when they are widths (grid indices), else the widths it
    recorded (a strategy whose parameters are other knobs, e.g. ``gates``)."""
    if any(k.startswith(PARAM_PREFIX) for k in trial.params) or "widths" not in trial.user_attrs:
        return space.widths(trial.params)
    widths = {k: int(v) for k, v in trial.user_attrs["widths"].items()}
    if not space.contains(widths):
        raise ConfigError(
            f"trial {trial.number} recorded widths off this search grid (a study of another space): "
            "pass --study NEW_NAME"
        )
    return widths


def ranked_candidates(study: optuna.Study, space: WidthSpace) -> list[Candidate]:
    """Complete, feasible trials, most accurate first, one per distinct widths."""
    seen: set[tuple[int, ...]] = set()
    out = []
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    for t in sorted(trials, key=lambda t: (-accuracy_of(t), t.number)):
        if not is_feasible(t):
            continue
        widths = trial_widths(t, space)
        key = tuple(widths.values())
        if key not in seen:
            seen.add(key)
            out.append(
                Candidate(
                    widths, float(t.user_attrs["predicted_ms"]), accuracy_of(t), t.number,
                    t.user_attrs.get("start"),
                )
            )  # fmt: skip
    if not out:
        raise BudgetError(
            f"no trial of study '{study.study_name}' was trained within the budget: "
            "run more --trials or raise the budget"
        )
    return out


def with_trial_fallbacks(study: optuna.Study, ranked: list[Candidate]) -> list[Candidate]:
    """``ranked``, then the fallbacks each ranked trial recorded (its user attribute ``fallbacks``: [widths,
    predicted ms] pairs), pruned from that trial's weights, in the ranking's order."""
    fallbacks = [
        Candidate({k: int(v) for k, v in w.items()}, float(ms), start=c.start)
        for c in ranked
        if c.trial is not None
        for w, ms in study.trials[c.trial].user_attrs.get("fallbacks", [])
    ]
    return ranked + fallbacks
