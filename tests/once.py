"""Session fixtures built once per test run, shared by its pytest-xdist workers."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from filelock import FileLock


@contextmanager
def built_once(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[tuple[Path, bool]]:
    """A folder for a session fixture's files that the pytest-xdist workers of one run share: (folder,
    True) to the first worker to get here, which builds them while it holds the lock; (folder, False) to
    the others, once they are built. Without workers, this session's own folder."""
    base = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        base = base.parent  # the run's folder, above every worker's own
    root, built = base / name, base / f"{name}.built"
    with FileLock(str(base / f"{name}.lock")):
        if built.is_file():
            yield root, False
            return
        shutil.rmtree(root, ignore_errors=True)  # a build that failed half-way
        root.mkdir()
        yield root, True
        built.touch()
