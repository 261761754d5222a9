"""Fixtures of the api tests: the tiny run profiled on a deterministic backend double."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from doubles import use_backend
from once import built_once

from autoprune import api
from autoprune.config import FitConfig, ProtocolConfig, SamplingConfig


@pytest.fixture(scope="session")
def exact_run(
    tiny_run: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Path]]:
    """The tiny run's dense network, profiled and fit on the ``counting`` double instead of a device."""
    with built_once(tmp_path_factory, "exact_run") as (root, build):
        if build:
            with pytest.MonkeyPatch.context() as mp:
                use_backend(mp, "counting", "doubles:CountingBackend")
                protocol = ProtocolConfig(warmup_ms=0.0, iterations=2, min_round_ms=0.0, rounds=1)
                sampling = SamplingConfig(samples=24)
                api.profile("resnet20", out=root / "profile.parquet", checkpoint=tiny_run["checkpoint"],
                            backend="counting", sampling=sampling, protocol=protocol)  # fmt: skip
                fit = FitConfig(epochs=300, folds=0)
                api.fit(root / "profile.parquet", out=root / "predictor.pt", config=fit)
                rf = FitConfig(predictor="rf", compare=("rf",), folds=0)
                api.fit(root / "profile.parquet", out=root / "rf.pt", config=rf)
    with pytest.MonkeyPatch.context() as mp:  # the tests measure on the double too
        use_backend(mp, "counting", "doubles:CountingBackend")
        yield {
            "checkpoint": tiny_run["checkpoint"], "profile": root / "profile.parquet",
            "predictor": root / "predictor.pt", "rf": root / "rf.pt",
        }  # fmt: skip
