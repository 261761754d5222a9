"""The convolutions a lookup table covers: each ``nn.Conv2d`` call of the model, the channel groups that
set its input and output channels, and its grid of (c_in, c_out) points on the groups' width grid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from autoprune.config import SamplingConfig
from autoprune.errors import ConfigError
from autoprune.graph import ChannelGraph, ChannelGroup
from autoprune.latency.sampler import grid_of


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
    in_groups = _input_groups(graph, names)
    layers: list[ConvLayer] = []
    seen: dict[str, int] = {}
    for module, in_shape, out_shape in sorted(_conv_calls(model, example), key=lambda c: order[names[c[0]]]):
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
        out_axis = _axis([by_name[out_g]] if out_g else [], 0, sampling, grid, total=module.out_channels)
        in_axis = out_axis if depthwise else _axis(ins, fixed, sampling, grid, total=module.in_channels)
        layers.append(
            _conv_layer(
                module,
                name=name if seen[name] == 1 else f"{name}#{seen[name]}",
                module_name=name,
                shapes=(in_shape, out_shape),
                in_groups=tuple(g.name for g in ins),
                in_fixed=int(fixed),
                out_group=out_g,
                axes=(in_axis, out_axis),
            )
        )
    if not layers:
        raise ConfigError("the model runs no nn.Conv2d: a latency lookup table covers convolutions only")
    return layers


def _input_groups(graph: ChannelGraph, names: dict[nn.Module, str]) -> dict[str, list[str]]:
    """Conv module name -> the groups that prune its input channels, in the graph's order."""
    in_groups: dict[str, list[str]] = {}
    for g in graph.groups:
        for dep, _ in graph.group(g.name):
            module = dep.target.module
            if isinstance(module, nn.Conv2d) and graph.dg.is_in_channel_pruning_fn(dep.handler):
                found = in_groups.setdefault(names[module], [])
                if g.name not in found:
                    found.append(g.name)
    return in_groups


def _conv_calls(
    model: nn.Module, example: torch.Tensor
) -> list[tuple[nn.Conv2d, tuple[int, ...], tuple[int, ...]]]:
    """Every nn.Conv2d call of one forward pass: the module, its input shape and its output shape."""
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
    return calls


def _conv_layer(
    module: nn.Conv2d,
    *,
    name: str,
    module_name: str,
    shapes: tuple[tuple[int, ...], tuple[int, ...]],
    in_groups: tuple[str, ...],
    in_fixed: int,
    out_group: str | None,
    axes: tuple[tuple[int, ...], tuple[int, ...]],
) -> ConvLayer:
    """One call of ``module`` as a table layer: its geometry, shapes, groups and grid axes."""
    (in_shape, out_shape), (in_axis, out_axis) = shapes, axes
    depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
    return ConvLayer(
        name=name,
        module=module_name,
        in_groups=in_groups,
        in_fixed=in_fixed,
        out_group=out_group,
        in_channels=module.in_channels,
        out_channels=module.out_channels,
        depthwise=depthwise,
        groups=module.groups,
        kernel=_pair(module.kernel_size),
        stride=_pair(module.stride),
        padding=module.padding if isinstance(module.padding, str) else _pair(module.padding),
        dilation=_pair(module.dilation),
        padding_mode=module.padding_mode,
        height=int(in_shape[-2]),
        width=int(in_shape[-1]),
        out_height=int(out_shape[-2]),
        out_width=int(out_shape[-1]),
        in_axis=in_axis,
        out_axis=out_axis,
    )
