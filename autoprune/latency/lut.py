"""A per-layer latency lookup table (HALP, Shen et al. 2022): each convolution timed alone over a grid
of (input channels, output channels) at its own input resolution; a sub-network's latency is estimated
as the sum of its convolutions' table entries, interpolated bilinearly between grid points.

Which channel group sets a convolution's output channels is the group whose ``members`` hold it; which
sets its input channels is read from Torch-Pruning's DependencyGraph: the groups whose pruning group
prunes that convolution's *input* channels (a residual group feeds every conv after the add). A
depthwise conv's input and output channels are both its own group's; a conv's input channels that no
group prunes (the image, or a grouped conv's) are fixed.

Each grid point is measured as a bare ``nn.Conv2d`` (with a bias: after BN folding, which ONNX Runtime
and TensorRT do, every conv of these CNNs carries one), as HALP does; BN, activations, adds, pooling and
the classifier are not in the table, so the estimate is a little below the whole network's latency.
Identical conv shapes (ResNets repeat them a lot) are measured once and shared by every layer that has
them. The table lives beside its profile (``lut_path``): one parquet row per (layer, c_in, c_out) and a
JSON sidecar with the layer <-> group mapping and grid, so ``read_lut`` alone can estimate.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from autoprune._io import atomic_write, write_json
from autoprune.config import ProtocolConfig, SamplingConfig
from autoprune.errors import ConfigError, ProfileError
from autoprune.graph import ChannelGraph, ChannelGroup, check_widths
from autoprune.latency.backends import LatencyBackend
from autoprune.latency.compat import LUT_KEYS, check_same_run
from autoprune.latency.profile import measurement_meta, read_measurements
from autoprune.latency.protocol import measure
from autoprune.latency.sampler import grid_of

FORMAT = 1
KIND = "latency-lut"
SUFFIX = ".lut.parquet"


def lut_path(profile_path: str | Path) -> Path:
    """``<profile stem>.lut.parquet`` beside the profile (its sidecar is ``<profile stem>.lut.json``)."""
    path = Path(profile_path)
    return path.with_name(path.stem + SUFFIX) if not path.name.endswith(SUFFIX) else path


def lut_sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


@dataclass(frozen=True)
class ConvLayer:
    """One convolution call of the model, as the table sees it.

    ``c_in = in_fixed + sum(widths[g] for g in in_groups)``; ``c_out = widths[out_group]`` (or
    ``out_channels`` when ``out_group`` is None). ``in_axis``/``out_axis`` are its grid; a depthwise
    layer's table is one-dimensional (c_in = c_out = groups), over ``out_axis``.
    """

    name: str  # the module's qualified name; "<name>#2", ... for further calls of a shared module
    module: str
    in_groups: tuple[str, ...]
    in_fixed: int
    out_group: str | None
    in_channels: int
    out_channels: int
    depthwise: bool
    groups: int  # of the original conv: 1, in_channels (depthwise), or a fixed grouped conv's
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] | str
    dilation: tuple[int, int]
    padding_mode: str
    height: int  # input spatial size
    width: int
    out_height: int
    out_width: int
    in_axis: tuple[int, ...] = field(default=())
    out_axis: tuple[int, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConvLayer:
        d = dict(data)
        for key in ("in_groups", "kernel", "stride", "dilation", "in_axis", "out_axis"):
            d[key] = tuple(d[key])
        if not isinstance(d["padding"], str):
            d["padding"] = tuple(d["padding"])
        return cls(**d)

    def channels(self, widths: Mapping[str, int]) -> tuple[int, int]:
        """(c_in, c_out) of this conv in the sub-network ``widths`` (complete: every group named)."""
        c_out = widths[self.out_group] if self.out_group is not None else self.out_channels
        if self.depthwise:
            return c_out, c_out
        return self.in_fixed + sum(widths[g] for g in self.in_groups), c_out

    def points(self) -> list[tuple[int, int]]:
        """The (c_in, c_out) grid points to measure."""
        if self.depthwise:
            return [(c, c) for c in self.out_axis]
        return [(ci, co) for ci in self.in_axis for co in self.out_axis]

    def shape_key(self, c_in: int, c_out: int) -> tuple[Any, ...]:
        """What the latency of this conv at (c_in, c_out) depends on: equal keys are measured once."""
        groups = c_out if self.depthwise else self.groups
        return (c_in, c_out, groups, self.kernel, self.stride, self.padding, self.dilation,
                self.padding_mode, self.height, self.width)  # fmt: skip

    def conv(self, c_in: int, c_out: int) -> nn.Conv2d:
        """The standalone conv measured for grid point (c_in, c_out)."""
        return nn.Conv2d(
            c_in,
            c_out,
            self.kernel,
            self.stride,
            self.padding,
            self.dilation,
            groups=c_out if self.depthwise else self.groups,
            bias=True,
            padding_mode=self.padding_mode,  # type: ignore[arg-type]  # copied from an nn.Conv2d
        )

    def macs(self, c_in: int, c_out: int) -> int:
        """Multiply-accumulates per image."""
        groups = c_out if self.depthwise else self.groups
        kh, kw = self.kernel
        return c_out * (c_in // groups) * kh * kw * self.out_height * self.out_width


def _axis(
    groups: Sequence[ChannelGroup], fixed: int, sampling: SamplingConfig, grid: int, *, total: int
) -> tuple[int, ...]:
    """The grid over one channel axis: the group's allowed widths, thinned to ``grid`` points (several
    groups concatenated: their widths at the same fractions, summed, plus the fixed channels); no group:
    the one full size."""
    if not groups:
        return (total,)
    lists = [grid_of(g, sampling) for g in groups]
    n = min(grid, max(len(v) for v in lists))
    fractions = np.linspace(0.0, 1.0, n) if n > 1 else np.array([1.0])
    values = {fixed + sum(v[round(float(f) * (len(v) - 1))] for v in lists) for f in fractions}
    return tuple(sorted(values))


def _pair(value: Any) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


def find_layers(
    model: nn.Module, example: torch.Tensor, graph: ChannelGraph, sampling: SamplingConfig, grid: int
) -> list[ConvLayer]:
    """Every nn.Conv2d call of ``model`` on ``example`` (one image), its channel groups and its grid."""
    names = {module: name for name, module in model.named_modules()}
    order = {name: i for i, name in enumerate(names.values())}
    by_name = {g.name: g for g in graph.groups}
    out_group = {member: g.name for g in graph.groups for member in g.members}
    in_groups: dict[str, list[str]] = {}
    for g in graph.groups:
        for dep, _ in graph.group(g.name):
            module = dep.target.module
            if isinstance(module, nn.Conv2d) and graph.dg.is_in_channel_pruning_fn(dep.handler):
                found = in_groups.setdefault(names[module], [])
                if g.name not in found:
                    found.append(g.name)

    calls: list[tuple[nn.Conv2d, tuple[int, ...], tuple[int, ...]]] = []

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        assert isinstance(module, nn.Conv2d)
        calls.append((module, tuple(inputs[0].shape), tuple(output.shape)))

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()

    layers: list[ConvLayer] = []
    seen: dict[str, int] = {}
    for module, in_shape, out_shape in sorted(calls, key=lambda c: order[names[c[0]]]):
        name = names[module]
        seen[name] = seen.get(name, 0) + 1
        depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
        grouped = module.groups > 1 and not depthwise
        out_g = out_group.get(name) if not grouped else None  # grouped convs are left unpruned
        ins = [by_name[g] for g in in_groups.get(name, [])] if not (depthwise or grouped) else []
        fixed = module.in_channels - sum(g.channels for g in ins)
        if fixed < 0:  # a group feeding the conv twice (cat of x with x): out of the table's reach
            ins, fixed = [], module.in_channels
        if depthwise:
            ins, fixed = ([by_name[out_g]] if out_g else []), 0
        padding = module.padding if isinstance(module.padding, str) else _pair(module.padding)
        out_axis = _axis([by_name[out_g]] if out_g else [], 0, sampling, grid, total=module.out_channels)
        layers.append(
            ConvLayer(
                name=name if seen[name] == 1 else f"{name}#{seen[name]}",
                module=name,
                in_groups=tuple(g.name for g in ins),
                in_fixed=int(fixed),
                out_group=out_g,
                in_channels=module.in_channels,
                out_channels=module.out_channels,
                depthwise=depthwise,
                groups=module.groups,
                kernel=_pair(module.kernel_size),
                stride=_pair(module.stride),
                padding=padding,
                dilation=_pair(module.dilation),
                padding_mode=module.padding_mode,
                height=int(in_shape[-2]),
                width=int(in_shape[-1]),
                out_height=int(out_shape[-2]),
                out_width=int(out_shape[-1]),
                in_axis=out_axis
                if depthwise
                else _axis(ins, fixed, sampling, grid, total=module.in_channels),
                out_axis=out_axis,
            )
        )
    if not layers:
        raise ConfigError("the model runs no nn.Conv2d: a latency lookup table covers convolutions only")
    return layers


class ConvChannels:
    """Every layer's (c_in, c_out) as a linear function of the group widths, in torch (differentiable):
    ``c = widths @ matrix + fixed``, ``widths`` being (N, groups) in ``groups`` order."""

    def __init__(self, layers: Sequence[ConvLayer], groups: Sequence[ChannelGroup]) -> None:
        index = {g.name: i for i, g in enumerate(groups)}
        n_groups, n_layers = len(index), len(layers)
        self.in_matrix, self.out_matrix = torch.zeros(n_groups, n_layers), torch.zeros(n_groups, n_layers)
        self.in_fixed, self.out_fixed = torch.zeros(n_layers), torch.zeros(n_layers)
        for col, layer in enumerate(layers):
            if layer.out_group is None:
                self.out_fixed[col] = layer.out_channels
            else:
                self.out_matrix[index[layer.out_group], col] = 1.0
            if layer.depthwise:  # c_in follows c_out
                self.in_matrix[:, col], self.in_fixed[col] = self.out_matrix[:, col], self.out_fixed[col]
                continue
            self.in_fixed[col] = layer.in_fixed
            for g in layer.in_groups:
                self.in_matrix[index[g], col] += 1.0

    def __call__(self, widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(c_in, c_out), each (N, layers), in ``widths``' dtype."""
        dt = widths.dtype
        c_in = widths @ self.in_matrix.to(dt) + self.in_fixed.to(dt)
        return c_in, widths @ self.out_matrix.to(dt) + self.out_fixed.to(dt)


def _segment(axis: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices (lo, hi) of the grid segment holding ``v`` (the nearest one outside) and the position
    in it, 0 at lo and 1 at hi: linear interpolation inside, linear extrapolation outside."""
    if len(axis) == 1:
        zero = torch.zeros_like(v, dtype=torch.long)
        return zero, zero, torch.zeros_like(v)
    lo = (torch.searchsorted(axis, v.detach().contiguous(), right=True) - 1).clamp(0, len(axis) - 2)
    return lo, lo + 1, (v - axis[lo]) / (axis[lo + 1] - axis[lo])


def bilinear(
    xin: torch.Tensor, xout: torch.Tensor, table: torch.Tensor, c_in: torch.Tensor, c_out: torch.Tensor
) -> torch.Tensor:
    """``table`` (len(xin), len(xout)) read at (c_in, c_out) bilinearly, clipped at 0; differentiable."""
    i0, i1, s = _segment(xin, c_in)
    j0, j1, t = _segment(xout, c_out)
    low = table[i0, j0] + t * (table[i0, j1] - table[i0, j0])
    high = table[i1, j0] + t * (table[i1, j1] - table[i1, j0])
    return (low + s * (high - low)).clamp(min=0.0)


class LayerTables:
    """The table's numbers without the file: per layer its grid and latencies (ms), read in torch.

    Everything needed to estimate is in ``state()`` (plain lists), so a predictor can carry it."""

    def __init__(self, groups: Sequence[ChannelGroup], layers: Sequence[ConvLayer], grids: Sequence[Any]):
        self.groups, self.layers = list(groups), list(layers)
        self.grids = [
            (list(map(float, xi)), list(map(float, xo)), np.asarray(t, float).tolist()) for xi, xo, t in grids
        ]
        self.channels = ConvChannels(self.layers, self.groups)
        self._grids = [
            (torch.tensor(xi, dtype=torch.float64), torch.tensor(xo, dtype=torch.float64),
             torch.tensor(t, dtype=torch.float64))
            for xi, xo, t in self.grids
        ]  # fmt: skip

    def per_layer(self, widths: torch.Tensor) -> torch.Tensor:
        """(N, layers) latencies (ms) of every conv for (N, groups) widths (groups in order)."""
        c_in, c_out = self.channels(widths)
        cols = []
        for col, (layer, (xi, xo, table)) in enumerate(zip(self.layers, self._grids, strict=True)):
            dt = widths.dtype
            c_i = torch.zeros_like(c_out[:, col]) if layer.depthwise else c_in[:, col]  # 1-D table
            cols.append(bilinear(xi.to(dt), xo.to(dt), table.to(dt), c_i, c_out[:, col]))
        return torch.stack(cols, dim=1)

    def state(self) -> dict[str, Any]:
        return {
            "groups": [[g.name, g.channels] for g in self.groups],
            "layers": [layer.to_dict() for layer in self.layers],
            "grids": [list(g) for g in self.grids],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> LayerTables:
        groups = [ChannelGroup(name, int(ch), ()) for name, ch in state["groups"]]
        return cls(groups, [ConvLayer.from_dict(d) for d in state["layers"]], state["grids"])


@dataclass
class LatencyTable:
    """A measured lookup table: ``rows`` (one per layer and grid point) and ``meta`` (the sidecar)."""

    path: Path
    meta: dict[str, Any]
    rows: pd.DataFrame
    _tables: LayerTables | None = field(default=None, init=False, repr=False)

    @property
    def groups(self) -> list[ChannelGroup]:
        return [ChannelGroup(name, int(ch), ()) for name, ch in self.meta["groups"]]

    @property
    def layers(self) -> list[ConvLayer]:
        return [ConvLayer.from_dict(d) for d in self.meta["layers"]]

    def tables(self) -> LayerTables:
        """Each layer's grid and its measured latencies; a ProfileError if the table is unfinished."""
        if self._tables is not None:
            return self._tables
        latency = {
            (str(r.layer), int(r.c_in), int(r.c_out)): float(r.latency_ms)
            for r in self.rows[["layer", "c_in", "c_out", "latency_ms"]].itertuples(index=False)
        }
        grids, missing = [], 0
        for layer in self.layers:
            xin = layer.out_axis if layer.depthwise else layer.in_axis
            if layer.depthwise:  # c_in = c_out: a 1-D table, its in-axis a single dummy point
                values = [[latency.get((layer.name, c, c), np.nan) for c in layer.out_axis]]
                xin = (0,)
            else:
                values = [[latency.get((layer.name, ci, co), np.nan) for co in layer.out_axis] for ci in xin]
            table = np.array(values, dtype=float)
            missing += int(np.isnan(table).sum())
            grids.append((xin, layer.out_axis, table))
        if missing:
            raise ProfileError(
                f"lookup table '{self.path}' lacks {missing} of its entries (an interrupted run): "
                "re-run autoprune profile ... --lut to finish it"
            )
        self._tables = LayerTables(self.groups, self.layers, grids)
        return self._tables

    def _widths(self, widths: Sequence[Mapping[str, int]]) -> torch.Tensor:
        groups = self.groups
        full = [check_widths(groups, w) for w in widths]
        return torch.tensor([[w[g.name] for g in groups] for w in full], dtype=torch.float64)

    def layer_latencies(self, widths: Mapping[str, int]) -> dict[str, float]:
        """Each conv layer's table latency (ms) in the sub-network ``widths`` (omitted groups: dense)."""
        tables = self.tables()
        row = tables.per_layer(self._widths([widths]))[0].tolist()
        return {layer.name: ms for layer, ms in zip(tables.layers, row, strict=True)}

    def estimate(self, widths: Mapping[str, int]) -> float:
        """The sub-network's latency (ms): the sum of its convolutions' table latencies."""
        return float(self.estimate_many([widths])[0])

    def estimate_many(self, widths: Sequence[Mapping[str, int]]) -> np.ndarray:
        if not widths:
            return np.zeros(0)
        return self.tables().per_layer(self._widths(widths)).sum(1).numpy()


def read_lut(path: str | Path) -> LatencyTable:
    path = Path(path)
    side = lut_sidecar_path(path)
    meta, rows = read_measurements(
        path, side, what="lookup table", fix="run autoprune profile ... --lut to measure it"
    )
    if meta.get("kind") != KIND or meta.get("format") != FORMAT:
        raise ProfileError(
            f"'{side}' is not an autoprune lookup-table sidecar (format {FORMAT}): "
            "re-run autoprune profile ... --lut"
        )
    return LatencyTable(path, meta, rows)


def profile_lut(
    model: nn.Module,
    *,
    input_shape: Sequence[int],
    backend: LatencyBackend,
    protocol: ProtocolConfig,
    sampling: SamplingConfig,
    out: str | Path,
    grid: int = 8,
    model_spec: str | None = None,
    on_sample: Callable[[int, int], None] | None = None,
) -> LatencyTable:
    """Measure the lookup table of ``model``'s convolutions into ``out`` (a ``*.lut.parquet``, e.g.
    ``lut_path(profile)``); a rerun with the same settings measures only what is missing.

    ``on_sample(done, total)`` is called after every unique conv shape (measured or already present).
    """
    out = Path(out)
    if not out.name.endswith(SUFFIX):
        raise ConfigError(
            f"a lookup table file must end in {SUFFIX}, not '{out.name}': use lut_path(profile)"
        )
    if grid < 2:
        raise ConfigError(f"grid must be >= 2 (the narrowest and the full width), got {grid}")
    example = torch.zeros(1, *input_shape[1:])
    module = copy.deepcopy(model).eval()
    graph = ChannelGraph(module, example)
    layers = find_layers(module, example, graph, sampling, grid)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "kind": KIND,
        **measurement_meta(
            model_spec=model_spec,
            input_shape=input_shape,
            backend=backend,
            protocol=protocol,
            sampling=sampling,
        ),
        "grid": int(grid),
        "groups": [[g.name, g.channels] for g in graph.groups],
        "layers": [layer.to_dict() for layer in layers],
        "measured_module": "nn.Conv2d with bias, alone (no BN, activation or add)",
        "estimate": "sum over convs of the table, bilinear between grid points",
    }
    meta = json.loads(json.dumps(meta))  # tuples -> lists, as a reread sidecar has them
    records: list[dict[str, Any]] = []
    side = lut_sidecar_path(out)
    if out.exists() or side.exists():
        existing = read_lut(out)
        check_same_run(existing.meta, meta, out, LUT_KEYS, summarize=("groups", "layers"))
        meta["created"] = existing.meta.get("created", meta["created"])
        records = existing.rows.to_dict("records")
    write_json(side, meta)

    done = {(str(r["layer"]), int(r["c_in"]), int(r["c_out"])) for r in records}
    by_layer = {layer.name: layer for layer in layers}
    measured: dict[tuple[Any, ...], dict[str, Any]] = {}  # shape key -> stats, from earlier runs too
    for r in records:
        if r["layer"] in by_layer:
            key = by_layer[r["layer"]].shape_key(int(r["c_in"]), int(r["c_out"]))
            measured[key] = {k: r[k] for k in _stat_columns(r)}
    plan: dict[tuple[Any, ...], list[tuple[ConvLayer, int, int]]] = {}
    for layer in layers:
        for c_in, c_out in layer.points():
            plan.setdefault(layer.shape_key(c_in, c_out), []).append((layer, c_in, c_out))

    for n, (key, uses) in enumerate(plan.items(), start=1):
        todo = [(layer, ci, co) for layer, ci, co in uses if (layer.name, ci, co) not in done]
        if todo:
            if key not in measured:
                layer, ci, co = todo[0]
                measured[key] = _measure(layer.conv(ci, co), (int(input_shape[0]), ci, *key[-2:]), backend,
                                         protocol)  # fmt: skip
            records.extend(_row(layer, ci, co, measured[key]) for layer, ci, co in todo)
            done.update((layer.name, ci, co) for layer, ci, co in todo)
            _write_rows(out, pd.DataFrame(records))
        if on_sample is not None:
            on_sample(n, len(plan))
    return read_lut(out)


_ROW_KEYS = ("layer", "in_group", "out_group", "c_in", "c_out", "kernel", "stride", "padding", "dilation",
             "groups", "H", "W", "macs")  # fmt: skip


def _stat_columns(row: Mapping[str, Any]) -> list[str]:
    return [k for k in row if k not in _ROW_KEYS]


def _measure(
    conv: nn.Module, shape: Sequence[int], backend: LatencyBackend, protocol: ProtocolConfig
) -> dict[str, Any]:
    with backend.session(conv.eval(), shape) as session:
        stats = measure(session, protocol)
    return {"latency_ms": stats.median_ms, **{k: v for k, v in stats.to_dict().items() if k != "median_ms"}}


def _fmt(value: tuple[int, int] | str) -> str:
    return value if isinstance(value, str) else f"{value[0]}x{value[1]}"


def _row(layer: ConvLayer, c_in: int, c_out: int, stats: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "layer": layer.name,
        "in_group": "+".join(layer.in_groups) or None,
        "out_group": layer.out_group,
        "c_in": c_in,
        "c_out": c_out,
        "kernel": _fmt(layer.kernel),
        "stride": _fmt(layer.stride),
        "padding": _fmt(layer.padding),
        "dilation": _fmt(layer.dilation),
        "groups": c_out if layer.depthwise else layer.groups,
        "H": layer.height,
        "W": layer.width,
        "macs": layer.macs(c_in, c_out),
        **stats,
    }


def _write_rows(out: Path, frame: pd.DataFrame) -> None:
    atomic_write(out, lambda tmp: frame.to_parquet(tmp, index=False))


__all__ = [
    "ConvChannels",
    "ConvLayer",
    "LatencyTable",
    "LayerTables",
    "bilinear",
    "find_layers",
    "lut_path",
    "profile_lut",
    "read_lut",
]
