"""A lookup table on disk: measuring it beside its profile (resumable), reading it back and estimating
a sub-network's latency from it."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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
from autoprune.latency.lut._layers import ConvLayer, find_layers
from autoprune.latency.lut._tables import LayerTables
from autoprune.latency.profile import measurement_meta, read_measurements
from autoprune.latency.protocol import measure

FORMAT = 1
KIND = "latency-lut"
SUFFIX = ".lut.parquet"


def lut_path(profile_path: str | Path) -> Path:
    """``<profile stem>.lut.parquet`` beside the profile (its sidecar is ``<profile stem>.lut.json``)."""
    path = Path(profile_path)
    return path.with_name(path.stem + SUFFIX) if not path.name.endswith(SUFFIX) else path


def lut_sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


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


def check_grid(grid: int) -> None:
    """A lookup table needs at least the narrowest and the full width per axis."""
    if grid < 2:
        raise ConfigError(f"--lut-grid must be >= 2 (the narrowest and the full width), got {grid}")


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
    check_grid(grid)
    example = torch.zeros(1, *input_shape[1:])
    module = copy.deepcopy(model).eval()
    graph = ChannelGraph(module, example)
    layers = find_layers(module, example, graph, sampling, grid)
    meta = _lut_meta(graph, layers, model_spec, input_shape, backend, protocol, sampling, grid)
    records: list[dict[str, Any]] = []
    side = lut_sidecar_path(out)
    if out.exists() or side.exists():
        existing = read_lut(out)
        check_same_run(existing.meta, meta, out, LUT_KEYS, summarize=("groups", "layers"))
        meta["created"] = existing.meta.get("created", meta["created"])
        records = existing.rows.to_dict("records")
    write_json(side, meta)
    _measure_missing(layers, records, out, input_shape, backend, protocol, on_sample)
    return read_lut(out)


def _lut_meta(
    graph: ChannelGraph, layers: list[ConvLayer], model_spec: str | None, input_shape: Sequence[int],
    backend: LatencyBackend, protocol: ProtocolConfig, sampling: SamplingConfig, grid: int,
) -> dict[str, Any]:  # fmt: skip
    """The table's sidecar: how it was measured, the groups and the convolutions it covers."""
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
    return json.loads(json.dumps(meta))  # tuples -> lists, as a reread sidecar has them


def _measure_missing(
    layers: list[ConvLayer], records: list[dict[str, Any]], out: Path, input_shape: Sequence[int],
    backend: LatencyBackend, protocol: ProtocolConfig, on_sample: Callable[[int, int], None] | None,
) -> None:  # fmt: skip
    """Measure every grid point of ``layers`` not in ``records`` (each unique conv shape once, reusing
    the shapes measured before), appending to ``records`` and rewriting ``out`` after each shape."""
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
