from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from autoprune.config import ProtocolConfig, SamplingConfig
from autoprune.errors import ProfileError
from autoprune.graph import (
    ChannelGraph,
    ChannelGroup,
    Widths,
    dense_widths,
    narrowest_widths,
    pruned_copy,
)
from autoprune.latency import LatencyBackend, Session, get_backend, plan_samples, profile_model
from autoprune.latency.lut import LatencyTable, find_layers, lut_path, profile_lut, read_lut
from autoprune.latency.sampler import grid_of
from autoprune.models import create_model

FAST = ProtocolConfig(warmup_ms=0.0, iterations=2, min_round_ms=0.0, rounds=1)
EXAMPLE = torch.zeros(1, 3, 32, 32)


def _double_ms(conv: nn.Conv2d, out_hw: int) -> float:
    """The double's latency of one conv: proportional to its MACs, plus a fixed overhead. It is bilinear
    in (c_in, c_out) (linear in c for a depthwise conv), so the table's interpolation is exact for it."""
    return 1e-6 * conv.weight.numel() * out_hw + 1e-3


class _FixedSession(Session):
    def __init__(self, ms: float) -> None:
        self.ms = ms

    def time(self, iterations: int) -> np.ndarray:
        return np.full(iterations, self.ms)


class MacsBackend(LatencyBackend):
    """A test double: a standalone conv's latency is MACs-proportional; counts the models it loads."""

    name = "macs"

    def __init__(self, cpu: str = "test-cpu") -> None:
        self.cpu, self.loaded = cpu, 0
        self.shapes: list[tuple[Any, ...]] = []

    def settings(self) -> dict[str, Any]:
        return {}

    def fingerprint(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "logical_cores": 2, "accelerator": None, "versions": {}}

    def session(self, model: nn.Module, input_shape: Sequence[int]) -> Session:
        assert isinstance(model, nn.Conv2d) and model.in_channels == input_shape[1]
        self.loaded += 1
        self.shapes.append(
            (tuple(input_shape), model.out_channels, model.groups, model.kernel_size, model.stride)
        )
        with torch.no_grad():
            out = model(torch.zeros(tuple(input_shape)))
        return _FixedSession(_double_ms(model, out.shape[-2] * out.shape[-1]))


def _true_ms(model: nn.Module, widths: dict[str, int]) -> float:
    """What the double says the convs of the really pruned network cost, summed."""
    sub, _ = pruned_copy(model, EXAMPLE, widths)
    total: list[float] = []
    hooks = [
        m.register_forward_hook(lambda mod, _i, o: total.append(_double_ms(mod, o.shape[-2] * o.shape[-1])))
        for m in sub.modules()
        if isinstance(m, nn.Conv2d)
    ]
    with torch.no_grad():
        sub(EXAMPLE)
    for h in hooks:
        h.remove()
    return float(sum(total))


def _random_widths(
    groups: Sequence[ChannelGroup], rng: np.random.Generator, min_ratio: float = 0.25
) -> Widths:
    """Widths anywhere in the range, rounded to whole channels only: mostly off the grid."""
    return {g.name: max(1, round(g.channels * rng.uniform(min_ratio, 1))) for g in groups}


def _lut(model_name: str, out: Path, backend: LatencyBackend, grid: int = 3, **kw: Any) -> LatencyTable:
    return profile_lut(
        create_model(model_name),
        input_shape=(1, 3, 32, 32),
        backend=backend,
        protocol=FAST,
        sampling=SamplingConfig(**{"samples": 4, **kw}),
        out=out,
        grid=grid,
        model_spec=model_name,
    )


@pytest.mark.parametrize("model_name", ["resnet20", "mobilenet_v2"])
def test_layer_group_mapping_matches_the_pruned_network(model_name: str) -> None:
    model = create_model(model_name).eval()
    graph = ChannelGraph(model, EXAMPLE)
    layers = find_layers(model, EXAMPLE, graph, SamplingConfig(), 8)
    assert len(layers) == sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert layers[0].in_groups == () and layers[0].in_fixed == 3  # the image is never pruned
    rng = np.random.default_rng(0)
    for widths in [narrowest_widths(graph.groups, min_ratio=0.25), _random_widths(graph.groups, rng)]:
        sub, _ = pruned_copy(model, EXAMPLE, widths)
        modules = dict(sub.named_modules())
        for layer in layers:
            conv = modules[layer.module]
            assert layer.channels(widths) == (conv.in_channels, conv.out_channels), layer.name


def test_resnet_residual_group_and_mobilenet_depthwise() -> None:
    model = create_model("resnet20").eval()
    layers = {
        layer.name: layer
        for layer in find_layers(model, EXAMPLE, ChannelGraph(model, EXAMPLE), SamplingConfig(), 8)
    }
    # The stem's group is the residual stream of stage 1: it sets the outputs of the stem and of every
    # block's second conv, and the inputs of the convs that read the stream.
    assert {n for n, lay in layers.items() if lay.out_group == "conv1"} == {
        "conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2"
    }  # fmt: skip
    assert {n for n, lay in layers.items() if lay.in_groups == ("conv1",)} == {
        "layer1.0.conv1", "layer1.1.conv1", "layer1.2.conv1", "layer2.0.conv1", "layer2.0.shortcut.0"
    }  # fmt: skip
    assert layers["layer1.0.conv2"].in_groups == ("layer1.0.conv1",)
    assert (layers["layer3.0.conv1"].height, layers["layer3.0.conv1"].out_height) == (16, 8)

    mbv2 = create_model("mobilenet_v2").eval()
    lays = find_layers(mbv2, EXAMPLE, ChannelGraph(mbv2, EXAMPLE), SamplingConfig(), 8)
    depthwise = [lay for lay in lays if lay.depthwise]
    assert len(depthwise) == 17
    for lay in depthwise:
        assert lay.out_group is not None and lay.in_groups == (lay.out_group,) and lay.in_axis == lay.out_axis
        assert all(c_in == c_out for c_in, c_out in lay.points())
    first = depthwise[0]  # the first block has no expansion: its depthwise conv runs on the stem's group
    assert first.out_group == "features.0"


def test_grid_holds_narrowest_full_and_rounded_widths() -> None:
    model = create_model("resnet20").eval()
    graph = ChannelGraph(model, EXAMPLE)
    sampling = SamplingConfig(samples=200, min_ratio=0.25, round_to=8)
    narrowest = narrowest_widths(graph.groups, min_ratio=0.25, round_to=8)
    by_name = {g.name: g for g in graph.groups}
    sampled: dict[str, set[int]] = {g.name: set() for g in graph.groups}
    for _, widths in plan_samples(graph.groups, sampling):
        for name, w in widths.items():
            sampled[name].add(w)
    for g in graph.groups:  # the grid's candidates are exactly what a profile can sample
        assert sampled[g.name] <= set(grid_of(g, sampling))
    for grid in (2, 4, 8):
        for layer in find_layers(model, EXAMPLE, graph, sampling, grid):
            assert layer.out_group is not None  # resnet20: every conv's outputs are pruned
            axis = layer.out_axis
            channels = layer.out_channels
            assert axis[0] == narrowest[layer.out_group] and axis[-1] == channels
            assert 2 <= len(axis) <= grid and list(axis) == sorted(set(axis))
            assert all(w % 8 == 0 for w in axis)
            assert set(axis) <= set(grid_of(by_name[layer.out_group], sampling))
    (stage3,) = {
        lay.out_axis for lay in find_layers(model, EXAMPLE, graph, sampling, 8) if lay.out_channels == 64
    }
    assert stage3 == (16, 24, 32, 40, 48, 56, 64)  # 7 allowed widths: none thinned away at grid 8


def test_shapes_measured_once_resume_and_interrupt(tmp_path: Path) -> None:
    out = tmp_path / "r20.lut.parquet"
    backend = MacsBackend()
    table = _lut("resnet20", out, backend, grid=3)
    rows = table.rows
    layers = table.layers
    assert len(rows) == sum(len(lay.points()) for lay in layers)
    assert not rows.duplicated(["layer", "c_in", "c_out"]).any()
    shape_cols = ["c_in", "c_out", "kernel", "stride", "padding", "dilation", "groups", "H", "W"]
    unique = len(rows.drop_duplicates(shape_cols))
    assert backend.loaded == unique < len(rows) and len(set(backend.shapes)) == unique
    # layer1's three blocks share shapes: one measurement, one latency.
    a = rows[(rows.layer == "layer1.0.conv1") & (rows.c_in == 16) & (rows.c_out == 16)].latency_ms.item()
    b = rows[(rows.layer == "layer1.2.conv1") & (rows.c_in == 16) & (rows.c_out == 16)].latency_ms.item()
    assert a == b
    side = json.loads(out.with_name("r20.lut.json").read_text())
    assert side["kind"] == "latency-lut" and side["grid"] == 3 and side["device"]["cpu"] == "test-cpu"
    assert side["input_shape"] == [1, 3, 32, 32] and side["model"] == "resnet20" and len(side["groups"]) == 12

    again = _lut("resnet20", out, backend, grid=3)  # resume: nothing new to load
    assert backend.loaded == unique and len(again.rows) == len(rows)

    # An interrupted run leaves a readable, incomplete table that a rerun finishes.
    out2 = tmp_path / "cut.lut.parquet"
    cut = MacsBackend()

    def stop(done: int, total: int) -> None:
        if done == 10:
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        profile_lut(create_model("resnet20"), input_shape=(1, 3, 32, 32), backend=cut, protocol=FAST,
                    sampling=SamplingConfig(samples=4), out=out2, grid=3, model_spec="resnet20",
                    on_sample=stop)  # fmt: skip
    assert cut.loaded == 10
    with pytest.raises(ProfileError, match="lacks"):
        read_lut(out2).estimate({})
    progress: list[tuple[int, int]] = []
    profile_lut(create_model("resnet20"), input_shape=(1, 3, 32, 32), backend=cut, protocol=FAST,
                sampling=SamplingConfig(samples=4), out=out2, grid=3, model_spec="resnet20",
                on_sample=lambda d, t: progress.append((d, t)))  # fmt: skip
    assert cut.loaded == unique and progress[-1] == (unique, unique) and len(progress) == unique
    pd.testing.assert_frame_equal(
        read_lut(out2).rows.sort_values(["layer", "c_in", "c_out"]).reset_index(drop=True),
        rows.sort_values(["layer", "c_in", "c_out"]).reset_index(drop=True),
    )


def test_refuses_another_device_grid_or_rounding(tmp_path: Path) -> None:
    out = tmp_path / "r20.lut.parquet"
    _lut("resnet20", out, MacsBackend(), grid=2)
    with pytest.raises(ProfileError, match="another device"):
        _lut("resnet20", out, MacsBackend(cpu="other-cpu"), grid=2)
    with pytest.raises(ProfileError, match="another grid"):
        _lut("resnet20", out, MacsBackend(), grid=3)
    with pytest.raises(ProfileError, match="another sampling"):
        _lut("resnet20", out, MacsBackend(), grid=2, min_ratio=0.5)
    _lut("resnet20", out, MacsBackend(), grid=2, samples=50)  # the sample count does not change the grid


@pytest.mark.parametrize("model_name", ["resnet20", "mobilenet_v2"])
def test_estimate_is_the_table_sum_and_interpolates(tmp_path: Path, model_name: str) -> None:
    model = create_model(model_name).eval()
    table = _lut(
        model_name, tmp_path / "m.lut.parquet", MacsBackend(), grid=3 if model_name == "resnet20" else 2
    )
    groups = table.groups
    entry = {(r.layer, r.c_in, r.c_out): r.latency_ms for r in table.rows.itertuples()}
    # At grid points the estimate is the sum of the table's rows.
    for widths in (dense_widths(groups), narrowest_widths(groups, min_ratio=0.25)):
        per_layer = table.layer_latencies(widths)
        expected = {
            lay.name: entry[(lay.name, lay.channels(widths)[0], lay.channels(widths)[1])]
            for lay in table.layers
        }
        assert per_layer == pytest.approx(expected, rel=1e-12)
        assert table.estimate(widths) == pytest.approx(sum(expected.values()), rel=1e-12)
    assert table.estimate({}) == table.estimate(dense_widths(groups))
    # The double is bilinear in (c_in, c_out), so interpolating between grid points is exact for it:
    # off-grid, the estimate equals what the double says the really pruned network's convs cost.
    rng = np.random.default_rng(1)
    samples = [_random_widths(groups, rng) for _ in range(3)]
    for widths in samples:
        off = [lay for lay in table.layers if lay.channels(widths)[1] not in lay.out_axis]
        assert off  # the check is about interpolation
        assert table.estimate(widths) == pytest.approx(_true_ms(model, widths), rel=1e-9)
    assert table.estimate_many(samples) == pytest.approx([table.estimate(w) for w in samples])


def test_interpolation_is_between_neighbours(tmp_path: Path) -> None:
    table = _lut("resnet20", tmp_path / "m.lut.parquet", MacsBackend(), grid=3)
    # Group layer3.0.conv1 (64 ch) has axis (16, 40, 64); its layer3.0.conv2 reads it as input.
    (lay,) = [x for x in table.layers if x.name == "layer3.0.conv2"]
    assert lay.in_axis == (16, 40, 64) and lay.in_groups == ("layer3.0.conv1",)
    ms = table.layer_latencies
    lo, hi, mid = ms({"layer3.0.conv1": 16}), ms({"layer3.0.conv1": 40}), ms({"layer3.0.conv1": 28})
    assert lo["layer3.0.conv2"] < mid["layer3.0.conv2"] < hi["layer3.0.conv2"]
    assert mid["layer3.0.conv2"] == pytest.approx((lo["layer3.0.conv2"] + hi["layer3.0.conv2"]) / 2)
    assert mid["layer3.1.conv2"] == lo["layer3.1.conv2"]  # a layer the group does not touch


def test_paths_and_missing_table(tmp_path: Path) -> None:
    prof = tmp_path / "resnet20__onnxruntime__fp32__bs1__32x32.parquet"
    assert lut_path(prof) == tmp_path / "resnet20__onnxruntime__fp32__bs1__32x32.lut.parquet"
    assert lut_path(lut_path(prof)) == lut_path(prof)
    with pytest.raises(ProfileError, match="does not exist"):
        read_lut(lut_path(prof))
    with pytest.raises(Exception, match=r"lut\.parquet"):
        _lut("resnet20", prof, MacsBackend())  # never over a profile


def test_onnxruntime_lut_tracks_the_real_network(tmp_path: Path) -> None:
    """Real backend, fast protocol, a 2-point grid: the LUT estimate of the dense network is within a
    factor of 3 of the measured dense network, and the narrowest network is estimated faster."""
    backend = get_backend("onnxruntime", threads=1)
    protocol = ProtocolConfig(warmup_ms=0, iterations=3, min_round_ms=0, rounds=1)
    model = create_model("resnet20")
    sampling = SamplingConfig(samples=2)
    prof = profile_model(model, model_spec="resnet20", num_classes=10, input_shape=(1, 3, 32, 32),
                         backend=backend, sampling=sampling, protocol=protocol,
                         out=tmp_path / "r20.parquet")  # fmt: skip
    dense_ms = float(prof.rows.loc[prof.rows["kind"] == "dense", "latency_ms"].iloc[0])
    table = profile_lut(model, input_shape=(1, 3, 32, 32), backend=backend, protocol=protocol,
                        sampling=sampling, out=lut_path(tmp_path / "r20.parquet"), grid=2)  # fmt: skip
    dense_est = table.estimate(dense_widths(table.groups))
    assert dense_ms / 3 < dense_est < dense_ms * 3
    assert table.estimate(narrowest_widths(table.groups, min_ratio=0.25)) < dense_est
