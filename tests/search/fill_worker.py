"""One worker of ``test_workers``: fills a shared study as a search strategy does (``fill_study``), every
trial proposing x in [0, 1); proposals over 0.7 are "over the budget" (not trained, not counted), the
others claim a network and "train" it briefly. The workers start filling together (each waits until all
``WORKERS`` have put a file in ``BARRIER``), so they contend. Usage:
python fill_worker.py STORAGE STUDY TRIALS BARRIER WORKERS."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import optuna

from autoprune.search.study import open_study
from autoprune.search.workers import claim, fill_study


def main(storage: str, study_name: str, trials: int, barrier: Path, workers: int) -> None:
    study = open_study(
        storage=storage,
        study_name=study_name,
        sampler=optuna.samplers.RandomSampler(),
        directions=["maximize"],
    )
    (barrier / str(os.getpid())).touch()
    deadline = time.monotonic() + 120
    while len(list(barrier.iterdir())) < workers and time.monotonic() < deadline:
        time.sleep(0.05)

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        if x <= 0.7:
            claim(study, trial, trials)
            time.sleep(0.1)  # training
        trial.set_user_attr("evaluated", x <= 0.7)
        return x

    fill_study(study, objective, trials=trials, max_trials=10 * trials)


if __name__ == "__main__":
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5]))
