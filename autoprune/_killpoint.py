"""Test-only crash points: ``AUTOPRUNE_TEST_KILL_AT=NAME[@N]`` makes the process SIGKILL itself the N-th
time (default the first) it reaches the point ``NAME``, so the crash tests (``tests/test_crash.py``) kill a
real run at a chosen moment without sleeping a random time. Unset, a point costs one dictionary lookup."""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "AUTOPRUNE_TEST_KILL_AT"
_reached: Counter[str] = Counter()


def kill_point(name: str) -> None:
    """SIGKILL this process here when ``AUTOPRUNE_TEST_KILL_AT`` names this point and its count."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, _, nth = spec.partition("@")
    if target != name:
        return
    _reached[name] += 1
    if _reached[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
