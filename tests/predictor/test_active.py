from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from doubles import CountingBackend
from torch import nn

from autoprune.config import ProtocolConfig, SamplingConfig
from autoprune.errors import ConfigError
from autoprune.graph import ChannelGraph, ChannelGroup, Widths, allowed_widths
from autoprune.latency import LatencyBackend, Profile, plan_samples, profile_model
from autoprune.latency.lut import ConvLayer
from autoprune.predictor import Features, layers_of, make_predictor
from autoprune.predictor.active import ActiveAcquirer, acquisition_scores, active_curve

TINY = {"epochs": 150, "members": 3}
GROUPS = [ChannelGroup(f"g{i}", c, ()) for i, c in enumerate([16, 32, 64, 64, 32])]
CONV: dict[str, Any] = {
    "module": "Conv2d", "depthwise": False, "groups": 1, "kernel": (3, 3), "stride": (1, 1),
    "padding": (1, 1), "dilation": (1, 1), "padding_mode": "zeros", "height": 8, "width": 8,
    "out_height": 8, "out_width": 8,
}  # fmt: skip
FAST = ProtocolConfig(warmup_ms=0.0, iterations=2, min_round_ms=0.0, rounds=1)
INPUT = (1, 3, 16, 16)


def chain_features() -> Features:
    """A plain chain of 3x3 convolutions, one per group: MACs follow the products of adjacent widths."""
    layers, prev = [], None
    for g in GROUPS:
        c_in = prev.channels if prev else 3
        wiring = {"in_groups": (prev.name,) if prev else (), "in_fixed": 0 if prev else 3}
        layers.append(
            ConvLayer(g.name, **wiring, out_group=g.name, in_channels=c_in, out_channels=g.channels, **CONV)
        )
        prev = g
    return Features(GROUPS, layers)


def synthetic_profile(n: int, low: float = 0.25, high: float = 1.0, seed: int = 0) -> Profile:
    """Rows with keep fractions in [low, high] and a known law: overhead plus adjacent-width products."""
    frac = np.random.default_rng(seed).uniform(low, high, (n, len(GROUPS)))
    rows = pd.DataFrame(
        {f"w:{g.name}": np.round(frac[:, i] * g.channels).astype(int) for i, g in enumerate(GROUPS)}
    )
    f = np.stack([rows[f"w:{g.name}"] / g.channels for g in GROUPS], 1)
    rows["latency_ms"] = 0.2 + 0.3 * (f[:, :-1] * f[:, 1:]).sum(1) + 0.1 * f[:, 0]
    rows["kind"] = "uniform"
    rows["noisy"] = False
    meta = {
        "sampling": {"min_ratio": 0.25, "round_to": 8, "round_min_channels": 16},
        "groups": [[g.name, g.channels] for g in GROUPS],
        **dict.fromkeys(("model", "num_classes", "input_shape", "batch_size", "backend", "precision")),
        **{key: {} for key in ("backend_settings", "device", "protocol")},
    }
    return Profile(path=Path("synthetic.parquet"), meta=meta, rows=rows)


def uniform_widths(fractions: Sequence[float]) -> list[Widths]:
    return [{g.name: max(4, round(f * g.channels)) for g in GROUPS} for f in fractions]


# -- acquisition -----------------------------------------------------------------------------------
def test_scores_prefer_where_the_ensemble_disagrees_and_near_the_budget() -> None:
    features = chain_features()
    covered = synthetic_profile(80, low=0.7, high=1.0)  # only wide networks were measured
    predictor = make_predictor("lpnet", features, **{**TINY, "members": 5}).fit(covered)  # a steadier std
    inside = uniform_widths(np.linspace(0.72, 0.98, 20))
    outside = uniform_widths(np.linspace(0.25, 0.4, 20))
    scores = acquisition_scores(predictor, inside + outside)
    assert scores[20:].mean() > 1.5 * scores[:20].mean()
    assert (np.argsort(-scores)[:10] >= 20).mean() >= 0.7
    # A budget among the wide networks moves the choice there, away from the uncertain narrow ones.
    budget = float(np.median(predictor.predict(inside)))
    near = acquisition_scores(predictor, inside + outside, budget_ms=budget)
    assert (np.argsort(-near)[:10] < 20).mean() >= 0.8 and np.all(near <= scores)
    with pytest.raises(ConfigError, match="budget-ms"):
        acquisition_scores(predictor, inside, budget_ms=0.0)


def test_acquirer_returns_new_distinct_rounded_widths() -> None:
    profile = synthetic_profile(30)
    acquirer = ActiveAcquirer(chain_features(), batch=4, pool=200, lpnet_options=TINY)
    picks = acquirer(profile, 3)
    keys = {tuple(w.values()) for w in picks}
    assert len(picks) == len(keys) == 3
    assert not keys & {tuple(w.values()) for w in profile.widths()}
    for w in picks:  # on the sampling grid (min_ratio 0.25, multiples of 8)
        for g in GROUPS:
            assert w[g.name] in allowed_widths(g.channels, min_ratio=0.25, round_to=8, round_min_channels=16)
    assert acquirer(profile, 3) == picks  # a function of the profile: a resumed run picks the same
    with pytest.raises(ConfigError, match="active-initial"):
        acquirer(synthetic_profile(4), 3)


# -- profile_model with an acquirer ----------------------------------------------------------------
def tiny_model() -> nn.Module:
    """Three conv-BN-ReLU blocks (channel groups of 32, 64 and 64): fast to trace, prune and time."""
    blocks = [(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()) for c_in, c_out in
              ((3, 32), (32, 64), (64, 64))]  # fmt: skip
    return nn.Sequential(
        *[m for b in blocks for m in b], nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)
    )


def tiny_groups(model: nn.Module) -> list[ChannelGroup]:
    return ChannelGraph(model, torch.zeros(1, *INPUT[1:])).groups


class ScriptedAcquirer:
    """Proposes an already measured network, then the next ``batch`` networks of a fixed list."""

    def __init__(self, model: nn.Module, batch: int = 3) -> None:
        groups = tiny_groups(model)
        self.dense = {g.name: g.channels for g in groups}
        self.fresh = [{g.name: g.channels * k // 8 for g in groups} for k in (7, 5, 3)]
        self.fresh += [{**self.dense, g.name: g.channels * 5 // 8} for g in groups]  # never planned
        self.batch = batch
        self.calls: list[int] = []

    def __call__(self, profile: Profile, n: int) -> list[Widths]:
        self.calls.append(n)
        done = {tuple(w.values()) for w in profile.widths()}
        new = [w for w in self.fresh if tuple(w.values()) not in done]
        return [self.dense, *new[: self.batch]]


def _active_profile(out: Path, backend: LatencyBackend, acquire: Any, samples: int, initial: int) -> Profile:
    return profile_model(
        tiny_model(), model_spec="tiny", num_classes=10, input_shape=INPUT,
        backend=backend, sampling=SamplingConfig(samples=samples), protocol=FAST, out=out,
        acquire=acquire, initial=initial,
    )  # fmt: skip


def test_profile_model_measures_the_plan_then_the_acquirers_picks_and_resumes(tmp_path: Path) -> None:
    out, backend = tmp_path / "p.parquet", CountingBackend()
    model = tiny_model()
    acquirer = ScriptedAcquirer(model)
    prof = _active_profile(out, backend, acquirer, samples=8, initial=4)
    plan = plan_samples(tiny_groups(model), SamplingConfig(samples=8))
    assert len(prof.rows) == 8 and backend.loaded == 9  # and the reference
    assert list(prof.rows["kind"]) == [k for k, _ in plan[:4]] + ["active"] * 4
    assert prof.widths()[:4] == [w for _, w in plan[:4]]
    assert prof.widths()[4:] == acquirer.fresh[:4]  # the measured dense network is skipped, n caps
    assert list(prof.rows["sample_id"]) == list(range(8)) and acquirer.calls == [4, 1]
    assert prof.meta["active"] == {"initial": 4}
    again = CountingBackend()  # the same settings: nothing left to measure
    assert len(_active_profile(out, again, acquirer, samples=8, initial=4).rows) == 8
    assert again.loaded == 0 and acquirer.calls == [4, 1]
    more = _active_profile(out, again, acquirer, samples=10, initial=4)  # grows by active rows only
    assert again.loaded == 3 and list(more.rows["kind"][8:]) == ["active"] * 2
    assert list(more.rows["sample_id"]) == list(range(10))
    planned = profile_model(  # a plain rerun: the plan's rows, with sample ids still unique
        model, model_spec="tiny", num_classes=10, input_shape=INPUT, backend=again,
        sampling=SamplingConfig(samples=12), protocol=FAST, out=out,
    )  # fmt: skip
    assert len(planned.rows) > 10 and planned.rows["sample_id"].is_unique
    assert planned.meta["active"] == {"initial": 4}  # the last active run's settings are kept


def test_profile_model_stops_when_the_acquirer_has_nothing_new(tmp_path: Path) -> None:
    backend, progress = CountingBackend(), []
    prof = profile_model(
        tiny_model(), model_spec="tiny", num_classes=10, input_shape=INPUT,
        backend=backend, sampling=SamplingConfig(samples=8), protocol=FAST, out=tmp_path / "p.parquet",
        acquire=lambda profile, n: profile.widths()[:n], initial=3,
        on_sample=lambda done, total: progress.append((done, total)),
    )  # fmt: skip
    assert len(prof.rows) == 3 and backend.loaded == 4 and progress == [(1, 8), (2, 8), (3, 8)]


def test_active_acquirer_drives_a_real_profile(tmp_path: Path) -> None:
    model = tiny_model()
    groups = tiny_groups(model)
    acquirer = ActiveAcquirer(
        Features(groups, layers_of(model, INPUT, groups)), batch=2, pool=100, lpnet_options=TINY
    )
    prof = _active_profile(tmp_path / "p.parquet", CountingBackend(), acquirer, samples=9, initial=6)
    assert list(prof.rows["kind"]).count("active") == 3 and len(set(map(str, prof.widths()))) == 9


# -- the sample-efficiency benchmark ---------------------------------------------------------------
def test_active_curve_gives_one_entry_per_size_and_strategy() -> None:
    profile, features = synthetic_profile(150), chain_features()
    held_out = np.arange(110, 150)
    sizes = [10, 20, 30]
    curves = {
        s: active_curve(
            profile, features, held_out=held_out, sizes=sizes, strategy=s, batch=5, lpnet_options=TINY
        )
        for s in ("random", "active")
    }
    for strategy, curve in curves.items():
        assert [(e["n"], e["strategy"]) for e in curve] == [(n, strategy) for n in sizes]
        for e in curve:
            assert e["held_out"] == 40 and 0 <= e["within_10"] <= 100 and np.isfinite(e["mape"])
        assert curve[-1]["mape"] < 15 and curve[-1]["kendall_tau"] > 0.5
    again = active_curve(
        profile, features, held_out=held_out, sizes=sizes, strategy="random", batch=5, lpnet_options=TINY
    )
    assert again == curves["random"]
    with pytest.raises(ConfigError, match="unknown strategy"):
        active_curve(profile, features, held_out=held_out, sizes=sizes, strategy="greedy")
    with pytest.raises(ConfigError, match="sizes must increase"):
        active_curve(profile, features, held_out=held_out, sizes=[10, 200], strategy="random")
