"""What a search killed mid-run leaves behind, made safe to resume: the trial it was training, and the
finalists it had measured."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from autoprune._io import write_json
from autoprune.graph import Widths
from autoprune.latency import Timing

Timer = Callable[[list[Widths]], list[Timing]]


def fail_orphaned_trials(study: optuna.Study) -> list[int]:
    """Mark the study's RUNNING trials FAIL and return their numbers. Only for a study no other live
    process uses (the run directory's own, under ``hold_run_dir``): every RUNNING trial then belongs to
    a process that died. A failed trial counts for nothing, so the strategy trains a replacement; left
    RUNNING it would wait for the heartbeat's grace period (a shared study relies on that)."""
    storage = study._storage
    orphans = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in orphans:
        storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
    return [t.number for t in orphans]


def measured_once(timer: Timer, path: Path) -> Timer:
    """``timer`` remembering each batch's timings in ``path`` (JSON, written atomically after each
    batch): a rerun that asks for a batch already timed, say after a crash in the final fine-tune, gets
    the recorded timings, so each finalist is measured once and the same one wins."""
    done: list[dict[str, Any]] = json.loads(path.read_text())["batches"] if path.is_file() else []

    def timed(batch: list[Widths]) -> list[Timing]:
        key = [dict(w) for w in batch]
        for entry in done:  # a batch recorded before timings were dicts is timed again
            if entry["widths"] == key and all(isinstance(t, dict) for t in entry["timings"]):
                return [Timing(**t) for t in entry["timings"]]
        timings = timer(batch)
        done.append({"widths": key, "timings": [asdict(t) for t in timings]})
        write_json(path, {"batches": done})
        return timings

    return timed
