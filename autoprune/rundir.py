"""Run directories record the settings they ran with, so a rerun continues its own run and never mixes
another run's settings into it."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from autoprune._io import write_json
from autoprune.errors import AutopruneError, ConfigError

_HELD: dict[Path, int] = {}  # lock files this process holds, to its open descriptor

MAY_GROW = frozenset({"trials", "finalists", "final_epochs", "measure_seconds"})
"""Settings a resumed run may change: more trials or finalists, a longer final fine-tune, longer to
measure the finalists."""


CONFIG_VERSION = 1
"""The version of the settings a run directory records (``config.<command>.json``, key ``version``). A
record without one is version 1. Raise it when a setting's meaning changes, and add the step from the
version before to ``_UPGRADES`` when an older record can still be read."""
_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}  # version N -> its record as N + 1


def read_settings(path: Path) -> dict[str, Any]:
    """The settings recorded at ``path``, brought to ``CONFIG_VERSION``, or one line saying why not."""
    settings = json.loads(path.read_text())
    version = settings.pop("version", 1)
    if not isinstance(version, int) or version > CONFIG_VERSION:
        raise ConfigError(
            f"'{path.parent}' was written by a newer autoprune (settings version {version}, this one reads "
            f"{CONFIG_VERSION}): upgrade autoprune, or pass a new --out"
        )
    while version < CONFIG_VERSION:
        if version not in _UPGRADES:
            raise ConfigError(
                f"'{path.parent}' was written by an older autoprune (settings version {version}, this one "
                f"reads {CONFIG_VERSION}): pass a new --out, or rerun it with the autoprune that wrote it"
            )
        settings, version = _UPGRADES[version](settings), version + 1
    return settings


def _without(d: dict[str, Any], keys: frozenset[str]) -> dict[str, Any]:
    return {k: (_without(v, keys) if isinstance(v, dict) else v) for k, v in d.items() if k not in keys}


def claim_run_dir(
    run_dir: Path, command: str, settings: dict[str, Any], *, may_change: Iterable[str] = MAY_GROW
) -> None:
    """Record the settings of ``command`` in ``run_dir``; refuse when it holds a run with other ones."""
    keys = frozenset(may_change)
    settings = json.loads(json.dumps(settings))  # as read back: tuples are lists
    path = Path(run_dir) / f"config.{command}.json"
    if path.is_file():
        old = read_settings(path)
        if _without(old, keys) != _without(settings, keys):
            raise ConfigError(
                f"'{run_dir}' holds a {command} run with other settings: pass a new --out, or delete it"
            )
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_json(path, {"version": CONFIG_VERSION, **settings})


def hold_run_dir(run_dir: Path, command: str) -> None:
    """Lock ``run_dir`` for ``command`` until ``release_run_dir`` or the process ends (the kernel drops
    the lock however it dies), or refuse when another live process holds it. A holder knows that what
    a killed run left in the directory (a RUNNING trial in its study) is no other process's work."""
    path = (Path(run_dir) / f".{command}.lock").resolve()
    if path in _HELD:
        return
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(
            f"another autoprune {command} is running in '{run_dir}': let it end, or pass another --out"
        ) from None
    _HELD[path] = fd


@contextmanager
def undone_on_refusal(run_dir: Path, command: str) -> Iterator[None]:
    """A run directory that this block creates is removed again when the block refuses the run (a user
    error, before any work): the corrected command then starts afresh instead of being refused as a run
    with other settings."""
    fresh = not Path(run_dir).exists()
    try:
        yield
    except AutopruneError:
        if fresh:
            release_run_dir(run_dir, command)
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def release_run_dir(run_dir: Path, command: str) -> None:
    """Drop the lock ``hold_run_dir`` took (a process that runs many searches keeps no descriptors)."""
    fd = _HELD.pop((Path(run_dir) / f".{command}.lock").resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the last descriptor of the open file releases its flock
