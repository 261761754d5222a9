from __future__ import annotations

import os

import pytest
import torch

from autoprune.latency.hygiene import load_average, pinned

HAS_AFFINITY = hasattr(os, "sched_setaffinity")


@pytest.mark.skipif(
    not HAS_AFFINITY or len(os.sched_getaffinity(0)) < 2, reason="needs CPU affinity and 2 usable CPUs"
)
def test_pinned_takes_the_last_cpus_cuts_torchs_threads_and_restores_both() -> None:
    allowed, threads = os.sched_getaffinity(0), torch.get_num_threads()
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
