"""A lookup table's numbers in torch: each conv's (c_in, c_out) as a linear map of the group widths and
its latency read bilinearly from its grid, differentiable (LPNet's features use it too)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from autoprune.graph import ChannelGroup
from autoprune.latency.lut._layers import ConvLayer


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
