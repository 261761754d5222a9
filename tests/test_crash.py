"""Crashes: `autoprune search` and `autoprune export` killed with SIGKILL at chosen moments, then rerun.

The moments are chosen deterministically: ``AUTOPRUNE_TEST_KILL_AT=NAME[@N]`` (``autoprune/_killpoint.py``)
makes the process kill itself the N-th time it reaches the named point (inside a trial, while timing the
finalists, after the final fine-tune, with a file written but not yet renamed into place), or the test
watches the study's sqlite file and kills the process once a trial has finished. After every kill each
file in the run directory is complete or absent; the rerun of the same command finishes with exactly the
requested trials, the finalists measured once, and a complete result.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState
from PIL import Image

from autoprune._io import write_json
from autoprune.errors import ConfigError
from autoprune.graph import ChannelGraph
from autoprune.latency import Timing
from autoprune.models import create_model
from autoprune.prune import load_pruned, prune_model, save_pruned
from autoprune.rundir import hold_run_dir, release_run_dir
from autoprune.search import fail_dead_claims, measured_once

TRIALS = 3


def _run(args: list[str], kill_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AUTOPRUNE_TEST_KILL_AT"}
    if kill_at is not None:
        env["AUTOPRUNE_TEST_KILL_AT"] = kill_at
    return subprocess.run(
        [sys.executable, "-m", "autoprune", *args], capture_output=True, text=True, timeout=600, env=env
    )


def _finished_trials(db: Path) -> int:
    """Trials the study in ``db`` holds as COMPLETE or PRUNED (0 while the file or tables are not there)."""
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            (n,) = con.execute("SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')").fetchone()
    except sqlite3.OperationalError:  # not created yet, or locked by the writer this instant
        return 0
    return int(n)


def _kill_after_finished_trials(args: list[str], db: Path, count: int) -> int:
    """Run ``args`` and SIGKILL it once its study holds ``count`` finished trials; its exit status."""
    env = {k: v for k, v in os.environ.items() if k != "AUTOPRUNE_TEST_KILL_AT"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "autoprune", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.monotonic() + 300
    while _finished_trials(db) < count and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the search ended before it could be killed"
    assert _finished_trials(db) >= count
    os.kill(proc.pid, signal.SIGKILL)
    return proc.wait()


def _check_complete_or_absent(run_dir: Path) -> None:
    """Every result file loads; the only others are hidden temporary files of a write cut short."""
    for f in run_dir.iterdir():
        if f.name.startswith("."):
            assert f.name in (".search.lock", ".study.db.lock") or f.name.endswith(".tmp"), f.name
        elif f.suffix == ".json":
            json.loads(f.read_text())
        elif f.suffix == ".pt":
            load_pruned(f)
        elif f.suffix == ".png":
            with Image.open(f) as image:
                image.verify()
        elif f.name in ("study.db-journal", "study.db-wal", "study.db-shm"):
            continue  # sqlite's own rollback log: the next open of study.db completes or undoes the write
        elif f.suffix == ".db":
            optuna.load_study(study_name="autoprune", storage=f"sqlite:///{f}").get_trials()
        elif f.suffix == ".md":
            assert f.read_text().endswith("\n"), f.name
        else:
            raise AssertionError(f"unexpected file {f.name}")


def _search_args(tiny_run: dict[str, Path], out: Path, seed: int) -> list[str]:
    # A budget every network meets: these tests are about trials and files, not about timing.
    return [
        "search", "resnet20", "--checkpoint", str(tiny_run["checkpoint"]), "--data", "digits",
        "--predictor", str(tiny_run["predictor"]), "--budget-ms", "1000", "--trials", str(TRIALS),
        "--finetune-epochs", "0.05", "--final-epochs", "0.05", "--finalists", "2",
        "--calibration-batches", "1", "--seed", str(seed), "--out", str(out),
    ]  # fmt: skip


# Each seed's kills, in order, in one run directory: each rerun resumes what the kills before it left.
# "finished:K": killed by the test once the study holds K finished trials (between or inside trials).
# A kill inside a trial of a fresh run: test_search_killed_inside_a_trial_resumes_with_the_trials_requested.
KILLS = {
    0: ["measure", "fine-tuned", "write:pruned.pt", "write:search.json"],
    1: ["finished:1", "trial@1", "write:finalists.json", "write:report.md"],
}


def _crash_and_resume(tiny_run: dict[str, Path], tmp_path: Path, seed: int, kills: list[str]) -> None:
    out = tmp_path / "run"
    args = _search_args(tiny_run, out, seed)
    db = out / "study.db"
    trial_kills = 0
    finalists: object = None  # the finalists' timings, once recorded
    for kill in kills:
        if kill.startswith("finished:"):
            rc = _kill_after_finished_trials(args, db, int(kill.split(":")[1]))
        else:
            rc = _run(args, kill_at=kill).returncode
        assert rc == -signal.SIGKILL, (kill, rc)
        _check_complete_or_absent(out)
        study = optuna.load_study(study_name="autoprune", storage=f"sqlite:///{db}")
        running = study.get_trials(states=(TrialState.RUNNING,))
        if kill.startswith("trial"):
            assert len(running) == 1, kill  # the trial in flight, left RUNNING by the killed process
        trial_kills += len(running)
        if finalists is not None:  # recorded timings are never re-measured or lost
            assert json.loads((out / "finalists.json").read_text()) == finalists, kill
        elif (out / "finalists.json").is_file():
            finalists = json.loads((out / "finalists.json").read_text())
    done = _run(args)
    assert done.returncode == 0, done.stderr[-3000:]
    _check_complete_or_absent(out)
    assert not list(out.glob(".*.tmp"))  # every write cut short was cleaned up by the rerun's
    study = optuna.load_study(study_name="autoprune", storage=f"sqlite:///{db}")
    states = [t.state for t in study.trials]
    trained = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    trained = [t for t in trained if t.user_attrs["evaluated"]]
    assert len(trained) == TRIALS  # none lost, none duplicated
    assert TrialState.RUNNING not in states and states.count(TrialState.FAIL) == trial_kills
    recorded = json.loads((out / "finalists.json").read_text())["batches"]
    assert finalists is None or recorded == finalists["batches"]  # type: ignore[index]
    assert len(recorded) == 1  # one batch of finalists, measured once
    summary = json.loads((out / "search.json").read_text())
    frame = summary["measurement"]["frame_ms"]  # judged: each one's ratio to the dense beside it, in ms
    measured = [t["ratio"] * frame for b in recorded for t in b["timings"]]
    assert [f["measured_ms"] for f in summary["finalists"]] == measured
    assert summary["trials"] == len(study.trials)
    pruned = load_pruned(out / "pruned.pt")
    assert pruned.widths == summary["widths"] and pruned.meta["measured_ms"] in measured


def test_search_killed_inside_a_trial_resumes_with_the_trials_requested(
    tiny_run: dict[str, Path], tmp_path: Path
) -> None:
    _crash_and_resume(tiny_run, tmp_path, seed=0, kills=["trial@2"])


@pytest.mark.slow
@pytest.mark.parametrize("seed", sorted(KILLS))
def test_search_killed_at_every_stage_resumes_losing_and_repeating_nothing(
    tiny_run: dict[str, Path], tmp_path: Path, seed: int
) -> None:
    _crash_and_resume(tiny_run, tmp_path, seed=seed, kills=KILLS[seed])


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_export_killed_while_writing_leaves_no_onnx_or_the_old_one(tmp_path: Path, seed: int) -> None:
    import onnx
    import onnxruntime as ort

    net = create_model("resnet20", num_classes=10).eval()
    groups = ChannelGraph(copy.deepcopy(net), torch.zeros(1, 3, 32, 32)).groups
    rng = np.random.default_rng(seed)
    widths = {g.name: int(rng.integers(1, g.channels + 1)) for g in groups}
    save_pruned(tmp_path / "pruned.pt", prune_model(net, widths=widths, model_spec="resnet20",
                                                    num_classes=10, input_shape=[1, 3, 32, 32]))  # fmt: skip
    onnx_file = tmp_path / "model.onnx"
    args = ["export", str(tmp_path), "--format", "onnx"]
    assert _run(args, kill_at="write:model.onnx").returncode == -signal.SIGKILL
    assert len(list(tmp_path.glob(".model.onnx.*.tmp"))) == 1 and not onnx_file.exists()  # never renamed
    done = _run(args)  # the same command again
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(tmp_path.glob(".*.tmp"))  # the write cut short was removed
    onnx.checker.check_model(onnx.load(str(onnx_file)))
    pruned = load_pruned(tmp_path / "pruned.pt")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = pruned.module.eval()(x).numpy()
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert np.abs(got - expected).max() <= 1e-4 + 1e-3 * np.abs(expected).max()  # parity
    old = onnx_file.read_bytes()
    assert _run(args, kill_at="write:model.onnx").returncode == -signal.SIGKILL  # overwriting it
    assert onnx_file.read_bytes() == old  # the old file stays whole


def test_a_run_directory_is_held_by_one_search_at_a_time(tmp_path: Path) -> None:
    """Another open file description stands for another process: flock locks are per open file."""
    import fcntl

    tmp_path.joinpath(".search.lock").touch()
    with open(tmp_path / ".search.lock") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="another autoprune search is running in") as err:
            hold_run_dir(tmp_path, "search")
        assert len(str(err.value).splitlines()) == 1
    hold_run_dir(tmp_path, "search")  # free once the other holder is gone
    hold_run_dir(tmp_path, "search")  # and held by this process, again
    with open(tmp_path / ".search.lock") as other:
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        release_run_dir(tmp_path, "search")
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released


def test_a_killed_runs_trial_is_failed_and_a_temporary_file_it_left_is_removed(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s")
    study.tell(study.ask(), 1.0)
    study.ask()  # left RUNNING, as by a process killed inside the trial
    assert fail_dead_claims(study, owned=True) == [1]
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert fail_dead_claims(study, owned=True) == []
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname().replace(".", "_").replace("-", "_")
    left = tmp_path / f".r.json.{host}-{dead.pid}.abc.tmp"  # a write its process never finished
    live = tmp_path / f".r.json.{host}-{os.getpid()}.abc.tmp"  # a live process's write: not touched
    for f in (left, live):
        f.write_text("{half")
    write_json(tmp_path / "r.json", {"a": 1})
    assert not left.exists() and live.exists() and json.loads((tmp_path / "r.json").read_text()) == {"a": 1}


def test_finalists_timed_once_are_reused_by_a_rerun(tmp_path: Path) -> None:
    calls: list[list[dict[str, int]]] = []

    def timer(batch: list[dict[str, int]]) -> list[Timing]:
        calls.append(batch)
        return [Timing(float(sum(w.values())), 1.01) for w in batch]

    path = tmp_path / "finalists.json"
    first = measured_once(timer, path)([{"a": 1}, {"a": 2}])
    again = measured_once(timer, path)([{"a": 1}, {"a": 2}])  # a rerun: read back from the file
    other = measured_once(timer, path)([{"a": 3}])
    assert first == again and other == [Timing(3.0, 1.01)] and calls == [[{"a": 1}, {"a": 2}], [{"a": 3}]]
