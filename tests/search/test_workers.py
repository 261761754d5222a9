"""Several search workers on one study: together they train exactly ``--trials`` networks (none lost,
none twice), on PostgreSQL and on a journal file; a sqlite file serves one worker and refuses a second;
a dead worker's claimed trial is failed and retried, not counted for ever."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from pg_server import REQUIRE_ENV, Unavailable, throwaway_postgres

from autoprune.errors import ConfigError
from autoprune.search.study import open_study
from autoprune.search.workers import (
    CLAIM,
    GRACE_S,
    WORKER,
    claim,
    fill_study,
    open_storage,
    release_storage,
    this_worker,
    with_driver,
)

FILL_WORKER = Path(__file__).with_name("fill_worker.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # workers share the cores


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL server's URL; skipped with the reason when none can be had (a failure in CI)."""
    required = os.environ.get(REQUIRE_ENV) == "1"
    give_up = pytest.fail if required else pytest.skip
    if not any(importlib.util.find_spec(m) for m in ("psycopg2", "psycopg")):
        give_up('no PostgreSQL driver: pip install -e ".[dev]" (it has autoprune[postgres])')
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(throwaway_postgres())
        except Unavailable as exc:
            give_up(f"no PostgreSQL server to test with: {exc}")
        yield url


def _load(storage: str, name: str) -> optuna.Study:
    backend, _ = open_storage(storage, name)
    return optuna.load_study(study_name=name, storage=backend)


def _check_exact(study: optuna.Study, trials: int) -> list[optuna.trial.FrozenTrial]:
    """Exactly ``trials`` trained networks; every trial numbered once; no claimed trial lost or left
    running. Returns the trained trials."""
    all_trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in all_trials) == list(range(len(all_trials)))
    assert not [t.number for t in all_trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    done = [t for t in all_trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    trained = [t for t in done if t.user_attrs.get("evaluated")]
    assert len(trained) == trials
    retried = {t.system_attrs.get("failed_trial") for t in all_trials}
    for t in all_trials:  # a claim is never lost: its network was trained, or it failed and was retried
        if t.user_attrs.get(CLAIM) == t.number:
            assert t in trained or (t.state == TrialState.FAIL and t.number in retried), t.number
    return trained


@pytest.mark.parametrize("kind", ["journal", "postgres"])
def test_contending_workers_train_exactly_the_trials_requested(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    storage = (
        f"journal:///{tmp_path / 'study.log'}" if kind == "journal" else request.getfixturevalue("postgres")
    )
    name, trials, workers = f"fill-{kind}-{tmp_path.name}", 12, 3
    barrier = tmp_path / "ready"
    barrier.mkdir()
    cmd = [sys.executable, str(FILL_WORKER), storage, name, str(trials), str(barrier), str(workers)]
    procs = [subprocess.Popen(cmd, env=ENV, stderr=subprocess.PIPE, text=True) for _ in range(workers)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    trained = _check_exact(_load(storage, name), trials)
    assert len({t.user_attrs[WORKER] for t in trained}) > 1  # they did contend


def test_a_dead_workers_claim_is_failed_and_its_network_trained_again(tmp_path: Path) -> None:
    storage = f"journal:///{tmp_path / 'study.log'}"
    study = open_study(
        storage=storage,
        study_name="s",
        sampler=optuna.samplers.RandomSampler(seed=0),
        directions=["maximize"],
    )
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = this_worker().rsplit(":", 2)[0] + f":{int(gone.stdout)}:0"
    proposing = study.ask()  # a worker was killed while proposing, another while training:
    proposing.set_user_attr(WORKER, f"{proposing.number}/{dead}")
    lost = study.ask()
    x = lost.suggest_float("x", 0.0, 1.0)
    lost.set_user_attr(CLAIM, lost.number)
    lost.set_user_attr(WORKER, f"{lost.number}/{dead}")
    lost.set_user_attr("evaluated", True)
    # Claimed and running, it counts: a worker that finds the study full waits for it ...
    other = study.ask()
    with pytest.raises(Exception, match="already holds its 1 trained"):
        claim(study, other, 1)
    study.tell(other, state=TrialState.FAIL)

    def objective(trial: optuna.Trial) -> float:
        value = trial.suggest_float("x", 0.0, 1.0)
        claim(study, trial, 2)
        trial.set_user_attr("evaluated", True)
        return value

    # ... until it sees that the worker is gone: its trials are failed, and the one that was training a
    # network is retried with its parameters.
    fill_study(study, objective, trials=2)
    assert study.trials[lost.number].state == study.trials[proposing.number].state == TrialState.FAIL
    assert not [t for t in study.trials if t.system_attrs.get("failed_trial") == proposing.number]
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == lost.number]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE and retried[0].params["x"] == x
    _check_exact(study, 2)


def test_a_worker_killed_mid_trial_is_resumed_at_once_with_no_network_lost(tmp_path: Path) -> None:
    """SIGKILL in the middle of the trials, rerun: its running trial is failed and retried at once (its
    process is gone; no heartbeat grace to wait out), and the study ends with exactly the trials."""
    storage, trials = f"sqlite:///{tmp_path / 'study.db'}", 20
    barrier = tmp_path / "ready"
    barrier.mkdir()
    cmd = [sys.executable, str(FILL_WORKER), storage, "s", str(trials), str(barrier), "1"]
    first = subprocess.Popen(cmd, env=ENV, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None:  # a few trials in
        if any(barrier.iterdir()) and len(optuna.load_study(study_name="s", storage=storage).trials) >= 5:
            break
        time.sleep(0.1)
    first.kill()
    first.wait()
    started = time.monotonic()
    again = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert time.monotonic() - started < GRACE_S
    _check_exact(_load(storage, "s"), trials)


def test_a_sqlite_file_serves_one_worker_and_refuses_a_second(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    open_storage(storage, "s")  # this process is its worker now
    open_storage(storage, "s")  # and may open it again
    second = subprocess.run(
        [sys.executable, "-c", f"from autoprune.search import check_storage; check_storage({storage!r})"],
        capture_output=True, text=True, env=ENV,
    )  # fmt: skip
    assert second.returncode != 0
    line = second.stderr.strip().splitlines()[-1]
    assert "in use by another search" in line and "postgresql://" in line and "journal:///" in line
    release_storage(storage)  # as a search does when it ends: then another process may take the file
    third = subprocess.run(
        [sys.executable, "-c", f"from autoprune.search import check_storage; check_storage({storage!r})"],
        capture_output=True, text=True, env=ENV,
    )  # fmt: skip
    assert third.returncode == 0, third.stderr


def test_storage_urls_name_their_driver_and_journal_files_their_folder(tmp_path: Path) -> None:
    assert with_driver("sqlite:///x.db") == "sqlite:///x.db"
    assert with_driver("postgresql+psycopg2://u@h/d") == "postgresql+psycopg2://u@h/d"
    if importlib.util.find_spec("psycopg2") is not None:
        assert with_driver("postgresql://u@h/d") == "postgresql+psycopg2://u@h/d"
    with pytest.raises(ConfigError, match="does not exist"):
        open_storage(f"journal:///{tmp_path / 'no' / 'study.log'}", "s")
    with pytest.raises(ConfigError, match="names no file"):
        open_storage("journal:///", "s")


@pytest.mark.slow
def test_search_workers_on_postgres_fill_one_study_and_each_measures_its_finalists_once(
    tiny_run: dict[str, Path], postgres: str, tmp_path: Path
) -> None:
    """3 `autoprune search` workers, one study: 6 trained trials in all; each worker ranks the finished
    study and measures its finalists on its device, each once."""
    ckpt, pred = str(tiny_run["checkpoint"]), str(tiny_run["predictor"])
    name, trials, workers = f"search-{tmp_path.name}", 6, 3
    # A budget every network meets: the test is about trials and finalists, not about timing.
    cmd = [sys.executable, "-m", "autoprune", "search", "resnet20", "--checkpoint", ckpt, "--data", "digits",
           "--predictor", pred, "--budget-ms", "1000", "--trials", str(trials), "--finetune-epochs", "0.05",
           "--final-epochs", "0.05", "--finalists", "2", "--calibration-batches", "2",
           "--storage", postgres, "--study", name]  # fmt: skip
    procs = [
        subprocess.Popen([*cmd, "--out", str(tmp_path / f"w{i}")], env=ENV, stderr=subprocess.PIPE, text=True,
                         stdout=subprocess.DEVNULL)
        for i in range(workers)
    ]  # fmt: skip
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    study = _load(postgres, name)
    _check_exact(study, trials)
    chosen = []
    for i in range(workers):
        finalists = json.loads((tmp_path / f"w{i}" / "search.json").read_text())["finalists"]
        numbers = [f["trial"] for f in finalists]
        assert len(numbers) == len(set(numbers))  # measured once each
        assert all(study.trials[n].state == TrialState.COMPLETE for n in numbers)
        chosen.append(numbers)
    # Every worker ranked the finished study: each measured a prefix of one ranking (a worker whose first
    # finalists measured over the budget went on to the next ones).
    longest = max(chosen, key=len)
    assert all(numbers == longest[: len(numbers)] and len(numbers) >= 2 for numbers in chosen), chosen
