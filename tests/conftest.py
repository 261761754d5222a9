"""Shared fixtures: a tiny trained resnet20 on digits, its profile and predictor (built once)."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoprune import api
from autoprune.config import FitConfig, ProtocolConfig, SamplingConfig, TrainConfig

# Enough to order networks, short enough for a test suite on 2 cores.
QUICK_PROTOCOL = ProtocolConfig(warmup_ms=20.0, iterations=5, min_round_ms=5.0, rounds=2)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """resnet20 trained briefly on digits, a 12-network profile of it, and an LPNet fit on that."""
    root = tmp_path_factory.mktemp("tiny_run")
    ckpt = root / "dense.pt"
    api.train("resnet20", data="digits", out=ckpt, config=TrainConfig(epochs=1))
    profile = root / "profile.parquet"
    api.profile(
        "resnet20", out=profile, checkpoint=ckpt, sampling=SamplingConfig(samples=12), protocol=QUICK_PROTOCOL
    )
    predictor = root / "predictor.pt"
    api.fit(profile, out=predictor, config=FitConfig(epochs=300, folds=0, include_noisy=True))
    return {"root": root, "checkpoint": ckpt, "profile": profile, "predictor": predictor}
