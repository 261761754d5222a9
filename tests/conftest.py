"""Shared fixtures: a tiny trained resnet20 on digits, its profile and predictor (built once)."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
import torch
from hardware import BrokenSetup, gpu_here, tensorrt_here
from once import built_once

from autoprune import api
from autoprune.config import FitConfig, ProtocolConfig, SamplingConfig, TrainConfig

# Enough to order networks, short enough for a test suite on 2 cores.
QUICK_PROTOCOL = ProtocolConfig(warmup_ms=20.0, iterations=5, min_round_ms=5.0, rounds=2)


_CHECKS: dict[str, Callable[[], str | None]] = {"tensorrt": tensorrt_here, "gpu": gpu_here}


@cache
def _hardware(marker: str) -> tuple[str | None, str | None]:
    """(skip reason, failure) for tests with ``marker``, looked up once per session."""
    try:
        return _CHECKS[marker](), None
    except BrokenSetup as exc:
        return None, str(exc)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n auto`` in pyproject.toml) each worker gets its own cores and as many torch
    threads, and so do the processes it starts (the CLI tests): a timing in one worker never shares a core
    with the other workers' work, and nothing is oversubscribed."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers < 2:
        return
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    if hasattr(os, "sched_setaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        share = max(1, len(allowed) // workers)
        start = (index * share) % len(allowed)
        mine = allowed[start : start + share]
        os.sched_setaffinity(0, mine)
        threads = len(mine)
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked ``tensorrt`` or ``gpu`` skip where the GPU or TensorRT is absent and fail where it is
    present but broken (tests/hardware.py)."""
    for marker in _CHECKS:
        if item.get_closest_marker(marker) is not None:
            skip, failure = _hardware(marker)
            if failure is not None:
                pytest.fail(failure, pytrace=False)
            if skip is not None:
                pytest.skip(skip)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist the long tests (marked ``slow``) come first: the workers start on them and the
    short ones fill the end, so that no worker is left waiting for another's long test. No test depends
    on the order (each runs alone as well)."""
    if "PYTEST_XDIST_WORKER" in os.environ:
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """resnet20 trained briefly on digits, a 12-network profile of it, and an LPNet fit on that (built
    once per run, shared by the test workers: nothing may write into it)."""
    with built_once(tmp_path_factory, "tiny_run") as (root, build):
        ckpt, profile, predictor = root / "dense.pt", root / "profile.parquet", root / "predictor.pt"
        if build:
            api.train("resnet20", data="digits", out=ckpt, config=TrainConfig(epochs=1))
            api.profile("resnet20", out=profile, checkpoint=ckpt, sampling=SamplingConfig(samples=12),
                        protocol=QUICK_PROTOCOL)  # fmt: skip
            api.fit(profile, out=predictor, config=FitConfig(epochs=300, folds=0, include_noisy=True))
    return {"root": root, "checkpoint": ckpt, "profile": profile, "predictor": predictor}
