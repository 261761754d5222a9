"""Atomic writes: a reader never sees a half-written file, a crash leaves the old file intact."""

from __future__ import annotations

import json
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from autoprune._killpoint import kill_point

_UMASK = os.umask(0)
os.umask(_UMASK)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove_orphans(target: Path, host: str) -> None:
    """Delete the temporary files of ``target`` that a process of this host left when it was killed
    mid-write (their names carry host and pid); a live writer's, or another host's, are left alone."""
    for tmp in target.parent.glob(f".{target.name}.{host}-*.tmp"):
        pid = tmp.name[len(f".{target.name}.{host}-") :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed over ``path`` (POSIX-atomic).
    A process killed mid-write leaves its temporary file, never a partial ``path``; the next write of
    ``path`` deletes it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().replace(".", "_").replace("-", "_")
    _remove_orphans(target, host)
    prefix = f".{target.name}.{host}-{os.getpid()}."
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=prefix, suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; the result should look like open()'s
    try:
        yield Path(tmp)
        kill_point(f"write:{target.name}")  # tests/test_crash.py: killed with the file written, not renamed
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` and move the result into place atomically."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def read_parquet(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a parquet file that a writer may be replacing (``atomic_write``) while we read.

    By path, pyarrow stats the file and opens it separately, so a rename in between pairs the old
    size with the new contents ("Page was smaller than expected"). An open handle pins one inode.
    """
    with open(path, "rb") as handle:
        return pd.read_parquet(handle)


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    return atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))
