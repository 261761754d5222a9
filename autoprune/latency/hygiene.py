"""Host hygiene for timing on a shared machine: the measuring process pinned to fixed cores where the OS
allows it, and the host's load recorded, so a profile says under what conditions it was measured."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def load_average() -> float | None:
    """The 1-minute load average, or None where the OS has none (Windows)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


@contextmanager
def pinned(cores: int) -> Iterator[list[int] | None]:
    """Pin this thread (and the threads it starts) to the last ``cores`` of the CPUs it may run on (the
    same ones every time, and away from CPU 0, where interrupts and most other work land), with torch's
    own thread pool cut to as many threads (more threads than cores spin against each other), restoring
    both on exit. Yields the pinned CPUs, or None where the OS has no affinity call (macOS, Windows) or
    ``cores`` is not less than the CPUs available (nothing to choose)."""
    if not hasattr(os, "sched_setaffinity"):
        yield None
        return
    allowed = sorted(os.sched_getaffinity(0))
    if cores < 1 or cores >= len(allowed):
        yield None
        return
    chosen, threads = allowed[-cores:], torch.get_num_threads()
    os.sched_setaffinity(0, chosen)
    torch.set_num_threads(min(threads, cores))
    try:
        yield chosen
    finally:
        os.sched_setaffinity(0, allowed)
        torch.set_num_threads(threads)


def host_record(
    *, threads: int | None, pinned_cpus: list[int] | None, load_start: float | None
) -> dict[str, Any]:
    """What a measurement file records of one run's host conditions; ``load_end`` is filled in when it
    ends."""
    return {
        "threads": threads,
        "pinned_cpus": pinned_cpus,
        "load_1min_start": load_start,
        "load_1min_end": None,
    }
