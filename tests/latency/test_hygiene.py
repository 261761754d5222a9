from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

from autoprune.latency.hygiene import load_average, pinned

HAS_AFFINITY = hasattr(os, "sched_setaffinity")


@pytest.fixture
def every_cpu() -> Iterator[set[int]]:
    """This process on every CPU the OS lets it have (a test worker runs on its own share of them), as
    before afterwards; the CPUs it got."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, range(os.cpu_count() or 1))  # the kernel keeps those the process may use
    try:
        yield os.sched_getaffinity(0)
    finally:
        os.sched_setaffinity(0, before)


@pytest.mark.skipif(not HAS_AFFINITY, reason="needs CPU affinity")
def test_pinned_takes_the_last_cpus_cuts_torchs_threads_and_restores_both(every_cpu: set[int]) -> None:
    if len(every_cpu) < 2:
        pytest.skip("needs 2 usable CPUs")
    allowed, threads = every_cpu, torch.get_num_threads()
    with pinned(1) as cpus:
        assert cpus == [max(allowed)] and os.sched_getaffinity(0) == {max(allowed)}
        assert torch.get_num_threads() == 1
    assert os.sched_getaffinity(0) == allowed and torch.get_num_threads() == threads


@pytest.mark.skipif(not HAS_AFFINITY, reason="needs CPU affinity")
def test_pinned_leaves_the_process_alone_when_there_is_nothing_to_choose() -> None:
    allowed = os.sched_getaffinity(0)
    with pinned(len(allowed)) as cpus:
        assert cpus is None and os.sched_getaffinity(0) == allowed


def test_load_average_is_a_number_where_the_os_has_one() -> None:
    load = load_average()
    assert (load is None) == (not hasattr(os, "getloadavg")) and (load is None or load >= 0)
