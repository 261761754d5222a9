"""One width grid: what the profile samples, what the lookup table measures and what the search asks for."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from autoprune.config import SamplingConfig
from autoprune.graph import ChannelGraph, allowed_widths
from autoprune.latency import plan_samples, read_lut, read_profile
from autoprune.latency.lut import find_layers
from autoprune.search import space_for

SHIPPED = Path(__file__).resolve().parents[2] / "latency_profiles"
EXAMPLE = torch.zeros(1, 3, 8, 8)


def _two_groups() -> nn.Module:
    """Groups of 20 and 36 channels: not multiples of round_to, where the grids used to disagree."""
    return nn.Sequential(
        nn.Conv2d(3, 20, 3, padding=1), nn.BatchNorm2d(20), nn.ReLU(),
        nn.Conv2d(20, 36, 3, padding=1), nn.BatchNorm2d(36), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(36, 10),
    ).eval()  # fmt: skip


def test_sampler_lut_and_search_share_one_grid() -> None:
    model = _two_groups()
    graph = ChannelGraph(model, EXAMPLE)
    assert [(g.name, g.channels) for g in graph.groups] == [("0", 20), ("3", 36)]
    sampling = SamplingConfig(samples=100, min_ratio=0.25, round_to=8)
    grid = {g.name: allowed_widths(g.channels, min_ratio=0.25, round_to=8) for g in graph.groups}
    assert grid == {"0": [8, 16, 20], "3": [8, 16, 24, 32, 36]}

    sampled: dict[str, set[int]] = {g.name: set() for g in graph.groups}
    plan = plan_samples(graph.groups, sampling)
    assert len(plan) == 3 * 5  # every network of the grid, each once
    for _, widths in plan:
        for name, w in widths.items():
            sampled[name].add(w)
    assert {name: sorted(ws) for name, ws in sampled.items()} == grid

    first, second = find_layers(model, EXAMPLE, graph, sampling, grid=8)
    assert list(first.out_axis) == grid["0"] and first.in_axis == (3,)
    assert list(second.in_axis) == grid["0"] and list(second.out_axis) == grid["3"]
    thinned = find_layers(model, EXAMPLE, graph, sampling, grid=3)[1]
    assert set(thinned.out_axis) < set(grid["3"]) and thinned.out_axis[-1] == 36

    space = space_for(graph.groups, sampling.to_dict())
    assert {g.name: space.choices(g) for g in graph.groups} == grid
    assert all(space.contains(w) for _, w in plan)


def _shipped(pattern: str) -> list[Path]:
    return sorted(p for p in SHIPPED.glob(f"*/{pattern}") if not p.name.endswith(".lut.parquet"))


@pytest.mark.parametrize("path", _shipped("*.parquet"), ids=lambda p: p.stem)
def test_shipped_profiles_lie_on_the_grid(path: Path) -> None:
    profile = read_profile(path)
    space = space_for(profile.groups, profile.meta["sampling"])
    widths = profile.widths()
    assert len(widths) == len(profile.rows) > 0
    off = [w for w in widths if not space.contains(w)]
    assert not off, f"{len(off)} networks off the grid, e.g. {off[0]}"
    table = read_lut(path.with_name(path.stem + ".lut.parquet"))
    for layer in table.layers:
        if layer.out_group is not None:
            (group,) = [g for g in profile.groups if g.name == layer.out_group]
            assert set(layer.out_axis) <= set(space.choices(group)), layer.name


def test_a_shipped_resnet20_profile_exists() -> None:
    assert any(p.name.startswith("resnet20__") for p in _shipped("*.parquet"))
