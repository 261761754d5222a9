from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from autoprune.config import ProtocolConfig, SamplingConfig
from autoprune.errors import ProfileError
from autoprune.graph import ChannelGraph
from autoprune.latency import LatencyBackend, Session, plan_samples, profile_model, read_profile
from autoprune.models import create_model


class _ParamSession(Session):
    def __init__(self, params: int) -> None:
        self.ms = params / 1e5

    def time(self, iterations: int) -> np.ndarray:
        return np.full(iterations, self.ms)


class CountingBackend(LatencyBackend):
    """A test double: latency proportional to parameter count; counts the networks it loads."""

    name = "counting"

    def __init__(self, cpu: str = "test-cpu") -> None:
        self.cpu, self.loaded = cpu, 0

    def settings(self) -> dict[str, Any]:
        return {}

    def fingerprint(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "logical_cores": 2, "accelerator": None, "versions": {}}

    def session(self, model: nn.Module, input_shape: Sequence[int]) -> Session:
        self.loaded += 1
        return _ParamSession(sum(p.numel() for p in model.parameters()))


FAST = ProtocolConfig(warmup_ms=0.0, iterations=2, min_round_ms=0.0, rounds=1)


def _profile(out, backend, samples=6, **kw):  # type: ignore[no-untyped-def]
    return profile_model(
        create_model("resnet20"),
        model_spec="resnet20",
        num_classes=10,
        input_shape=(1, 3, 32, 32),
        backend=backend,
        sampling=SamplingConfig(samples=samples, **kw),
        protocol=FAST,
        out=out,
    )


def test_profile_rows_sidecar_and_resume(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "p.parquet"
    backend = CountingBackend()
    prof = _profile(out, backend, samples=6)
    assert len(prof.rows) == 6 and backend.loaded == 6
    assert list(prof.rows["kind"][:2]) == ["dense", "narrowest"]
    meta = json.loads((tmp_path / "p.json").read_text())
    assert meta["backend"] == "counting" and meta["device"]["cpu"] == "test-cpu"
    assert meta["input_shape"] == [1, 3, 32, 32] and len(meta["groups"]) == 12
    # Dense is slowest: the double's latency follows parameters.
    assert prof.latency_ms()[0] == prof.latency_ms().max()
    again = _profile(out, backend, samples=9)  # a rerun measures only the 3 new networks
    assert len(again.rows) == 9 and backend.loaded == 9
    assert again.widths()[:6] == prof.widths()


def test_profile_refuses_another_device_or_settings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "p.parquet"
    _profile(out, CountingBackend())
    with pytest.raises(ProfileError, match="another device"):
        _profile(out, CountingBackend(cpu="other-cpu"))
    with pytest.raises(ProfileError, match="another sampling"):
        _profile(out, CountingBackend(), min_ratio=0.5)


def test_sampler_is_deterministic_distinct_and_rounded() -> None:
    groups = ChannelGraph(create_model("resnet20"), torch.zeros(1, 3, 32, 32)).groups
    config = SamplingConfig(samples=50, seed=3)
    plan = plan_samples(groups, config)
    assert plan == plan_samples(groups, config)
    assert [k for k, _ in plan[:2]] == ["dense", "narrowest"]
    keys = {tuple(w.values()) for _, w in plan}
    assert len(keys) == len(plan) == 50
    for _, w in plan:
        for g in groups:
            assert 4 <= w[g.name] <= g.channels and w[g.name] % 8 == 0


def test_missing_or_broken_profile(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProfileError, match="does not exist"):
        read_profile(tmp_path / "none.parquet")
    (tmp_path / "bad.parquet").write_text("not parquet")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ProfileError):
        read_profile(tmp_path / "bad.parquet")
