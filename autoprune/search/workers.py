"""Several search processes ("workers") filling one study: the storage they share, a study-wide lock, and
the claim that makes ``--trials`` count every worker's networks exactly once.

A trial that is about to train a network *claims* it under the study lock: the claim succeeds only while
the study holds fewer than ``trials`` trained or claimed networks (``claimed``), so the workers together
train exactly ``trials``; a trial that loses the race ends FAIL with nothing trained (``StudyFull``).
The lock is PostgreSQL's (or MySQL's) advisory lock on the study, or a file lock beside a journal file;
a sqlite file serves one worker (a second is refused with the advice to use PostgreSQL or a journal file).

A claimed trial whose worker died must not hold its slot for ever: a worker on the same machine that no
longer runs is seen at once (every trial records its worker's host, process id and start time); a worker
elsewhere is noticed by Optuna's heartbeat (RDB storages) after ``GRACE_S`` seconds. Either way the
trial is failed and, if it had claimed a network, retried once with the same parameters
(``RetryHeartbeatStaleTrialCallback``). A journal file has no heartbeat: use it on one machine. A worker
with nothing left to start waits for the other workers' claimed trials, so every worker ranks the
finished study.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
import warnings
import weakref
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import IO, Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from autoprune.errors import ConfigError

HEARTBEAT_S = 30
GRACE_S = 90  # a claimed trial with no heartbeat for this long is failed and retried (RDB storages)
POLL_S = 1.0  # how often a worker with nothing to start looks at the other workers' trials
JOURNAL = "journal://"
CLAIM, WORKER, EVALUATED = "claim", "worker", "evaluated"

Lock = Callable[[], AbstractContextManager[Any]]
_LOCKS: weakref.WeakKeyDictionary[optuna.Study, Lock] = weakref.WeakKeyDictionary()
_HELD: dict[str, IO[bytes]] = {}  # sqlite files this process is the worker of (until release_storage)


class StudyFull(Exception):
    """Raised inside a trial that would train a network when the study already holds its ``trials``."""


def _quiet_surplus(record: logging.LogRecord) -> bool:
    return "StudyFull" not in record.getMessage()  # a lost race, not a failure worth a traceback


logging.getLogger("optuna.study._optimize").addFilter(_quiet_surplus)


# ------------------------------------------------------------------ storages and their locks


def journal_path(storage: str) -> Path | None:
    """The file of a ``journal:///PATH`` storage (Optuna's journal file: several workers on one machine
    or a shared file system), or None for a database URL."""
    if not storage.startswith(JOURNAL):
        return None
    path = storage[len(JOURNAL) :]
    if not path or path.endswith("/"):
        raise ConfigError(f"--storage '{storage}' names no file: pass journal:///PATH/study.log")
    return Path(path)


def _file_lock(path: Path) -> Lock:
    @contextmanager
    def hold() -> Iterator[None]:
        with open(path, "ab") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    return hold


def _db_lock(engine: Any, name: str) -> Lock:
    """The database's advisory lock called ``name``, held by one connection for the block (PostgreSQL,
    MySQL; a no-op elsewhere)."""
    from sqlalchemy import text

    key = zlib.crc32(f"autoprune:{name}".encode())  # 32 bits: fits PostgreSQL's bigint key
    dialect = engine.dialect.name
    if dialect not in ("postgresql", "mysql", "mariadb"):
        return nullcontext

    @contextmanager
    def hold() -> Iterator[None]:
        with engine.connect() as conn:
            if dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
                unlock = text("SELECT pg_advisory_unlock(:k)")
            else:  # mysql / mariadb
                conn.execute(text("SELECT GET_LOCK(:k, 3600)"), {"k": str(key)})
                unlock = text("SELECT RELEASE_LOCK(:k)")
            conn.commit()
            try:
                yield
            finally:
                conn.execute(unlock, {"k": key if dialect == "postgresql" else str(key)})
                conn.commit()

    return hold


def _one_sqlite_worker(rdb: optuna.storages.RDBStorage, storage: str) -> None:
    """A sqlite file serves one worker: take its lock for this process's life, or refuse in one line."""
    database = rdb.engine.url.database
    if not database or database == ":memory:":
        return
    path = Path(database).resolve()
    if str(path) in _HELD:
        return
    f = open(path.with_name(f".{path.name}.lock"), "ab")  # noqa: SIM115 -- held until release_storage
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise ConfigError(
            f"--storage '{storage}' is in use by another search, and a sqlite file serves one worker: "
            "for several workers pass --storage postgresql://USER@HOST/DB or journal:///PATH/study.log"
        ) from None
    _HELD[str(path)] = f


def release_storage(storage: str) -> None:
    """Drop the sqlite file's lock ``open_storage`` took for this process (a process that runs many
    searches keeps no descriptors); nothing for other storages."""
    if journal_path(storage) is not None:
        return
    import sqlalchemy

    try:
        url = sqlalchemy.engine.make_url(storage)
    except sqlalchemy.exc.ArgumentError:
        return
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        f = _HELD.pop(str(Path(url.database).resolve()), None)
        if f is not None:
            f.close()  # closing the descriptor releases its flock


def with_driver(storage: str) -> str:
    """``postgresql://`` with the PostgreSQL driver that is installed named (``+psycopg2`` or ``+psycopg``):
    SQLAlchemy's default driver for the bare scheme differs between its versions (2.1: psycopg 3)."""
    if not storage.startswith("postgresql://"):
        return storage
    import importlib.util

    for module, driver in (("psycopg2", "psycopg2"), ("psycopg", "psycopg")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{driver}://" + storage[len("postgresql://") :]
    return storage  # SQLAlchemy's ImportError names the missing driver


def open_storage(storage: str, study_name: str) -> tuple[optuna.storages.BaseStorage, Lock]:
    """The storage behind ``storage`` (a SQLAlchemy URL or ``journal:///PATH``) and its study lock."""
    path = journal_path(storage)
    if path is not None:
        if not path.parent.is_dir():
            raise ConfigError(
                f"--storage '{storage}': the folder '{path.parent}' does not exist: create it or pass "
                "another path"
            )
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path))), _file_lock(
            path.with_name(path.name + ".claims.lock")
        )
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    url = with_driver(storage)
    schema = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        # Workers started together on a new database would each create Optuna's tables: one at a time.
        with _db_lock(schema, "schema")(), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats
            rdb = optuna.storages.RDBStorage(
                url,
                heartbeat_interval=HEARTBEAT_S,
                grace_period=GRACE_S,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
            )
    finally:
        schema.dispose()
    if rdb.engine.dialect.name == "sqlite":
        _one_sqlite_worker(rdb, storage)
    # PostgreSQL, MySQL: the database's lock; another database: claims are not serialised (exact with
    # one worker); sqlite: one worker.
    return rdb, _db_lock(rdb.engine, f"study:{study_name}")


def register(study: optuna.Study, lock: Lock) -> optuna.Study:
    _LOCKS[study] = lock
    return study


def study_lock(study: optuna.Study) -> AbstractContextManager[Any]:
    """Held by one worker of ``study`` at a time (a no-op for a study ``open_study`` did not open)."""
    return _LOCKS.get(study, nullcontext)()


# ------------------------------------------------------------------ workers, claims and the fill loop


def _started(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, Linux), so a reused process id is not taken
    for the worker that died; "" where /proc is not readable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]


def this_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_started(os.getpid())}"


def _dead(worker: str) -> bool:
    """A worker on this machine that no longer runs (a worker elsewhere: the heartbeat's to judge)."""
    parts = worker.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    return parts[2] != "" and _started(pid) != parts[2]  # the id now belongs to another process


def _holds_claim(t: FrozenTrial) -> bool:
    return t.user_attrs.get(CLAIM) == t.number  # a retried copy carries the old number: no claim yet


def claimed(study: optuna.Study) -> int:
    """Networks the study holds or is training: finished trained trials and running claimed ones."""
    n = 0
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            n += bool(t.user_attrs.get(EVALUATED))
        elif t.state == TrialState.RUNNING:
            n += _holds_claim(t)
    return n


def claim(study: optuna.Study, trial: optuna.Trial, trials: int) -> None:
    """Claim one of the study's ``trials`` networks for ``trial``, or raise ``StudyFull``."""
    with study_lock(study):
        if claimed(study) >= trials:
            raise StudyFull(f"study '{study.study_name}' already holds its {trials} trained networks")
        trial.set_user_attr(CLAIM, trial.number)


def _dead_trial(t: FrozenTrial) -> bool:
    """A running trial whose worker (recorded by that very trial: a retried copy carries the old one's)
    died on this machine."""
    number, _, worker = str(t.user_attrs.get(WORKER, "")).partition("/")
    return number == str(t.number) and _dead(worker)


def fail_dead_claims(study: optuna.Study, *, owned: bool = False) -> list[int]:
    """Fail the running trials of workers that died, and retry once those that had claimed a network (a
    proposal is just redone); returns the numbers failed here. A worker on this machine is judged at once
    (its process is gone), one elsewhere by the heartbeat (RDB storages). ``owned``: the study is this
    process's alone (the run directory's own, which ``hold_run_dir`` keeps from other processes), so every
    running trial was left by a process that died, whether or not it recorded its worker."""
    failed: list[int] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # a no-op without a heartbeat
    with study_lock(study):
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if not (owned or _dead_trial(t)):
                continue
            try:
                study.tell(t.number, state=TrialState.FAIL)
            except (RuntimeError, ValueError, optuna.exceptions.UpdateFinishedTrialError):
                continue  # finished meanwhile
            failed.append(t.number)
            if _holds_claim(t):  # it was training a network: train it again
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    RetryHeartbeatStaleTrialCallback(max_retry=1)(study, t)
    return failed


def _running_claims(study: optuna.Study) -> bool:
    return any(_holds_claim(t) for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def fill_study(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Any],
    *,
    trials: int,
    max_trials: int | None = None,
    on_trial: Callable[[int, int], None] | None = None,
) -> None:
    """Run ``objective`` in this worker until the study (every worker's trials) holds ``trials`` trained
    networks, or holds ``max_trials`` trials in all; then wait for the other workers' claimed trials.
    ``objective`` calls ``claim`` before it trains a network (``StudyFull`` ends its trial as FAIL)."""
    report = on_trial or (lambda done, total: None)

    def trained(s: optuna.Study) -> int:
        return sum(bool(t.user_attrs.get(EVALUATED)) for t in s.get_trials(deepcopy=False, states=_DONE))

    def room(s: optuna.Study) -> bool:
        return claimed(s) < trials and (max_trials is None or len(s.trials) < max_trials)

    def progress(s: optuna.Study, _t: FrozenTrial) -> None:
        report(min(trained(s), trials), trials)
        if not room(s):
            s.stop()

    def run(trial: optuna.Trial) -> Any:
        trial.set_user_attr(WORKER, f"{trial.number}/{this_worker()}")  # so a dead worker's trial is seen
        return objective(trial)

    report(min(trained(study), trials), trials)
    while True:
        fail_dead_claims(study)
        if room(study):
            n = None if max_trials is None else max_trials - len(study.trials)
            study.optimize(run, n_trials=n, callbacks=[progress], catch=(StudyFull,))
            continue
        if not _running_claims(study):
            break
        time.sleep(POLL_S)
    report(min(trained(study), trials), trials)


_DONE = (TrialState.COMPLETE, TrialState.PRUNED)
