"""What a latency predictor sees of a sub-network, computed in torch so LPNet stays differentiable.

For widths ``w`` (one per channel group, in profile order) the features are:

- ``frac:<group>``: each group's kept fraction ``w / channels``;
- ``macs``: multiply-accumulates of every convolution, relative to the dense network's;
- ``params``: convolution weights, relative to the dense network's;
- ``lut``: the per-layer lookup-table sum (HALP), relative to the dense network's, when the profile has
  a table.

MACs and parameters are exact polynomials of the widths over the model's convolutions (each conv's
(c_in, c_out) is a linear function of the widths: ``lut.ConvChannels``). BN, activations, pooling and
the classifier are left out: against Torch-Pruning's counter that is within 4 % for the ResNets and
VGG here and up to 15 % for MobileNetV2, whose depthwise convolutions are cheap. The layer list comes
from the profile's lookup table when there is one, otherwise from tracing the model once
(``layers_of``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from autoprune.config import SamplingConfig
from autoprune.errors import ConfigError
from autoprune.graph import ChannelGraph, ChannelGroup
from autoprune.latency.lut import ConvChannels, ConvLayer, LayerTables, find_layers


def layers_of(
    model: nn.Module, input_shape: Sequence[int], groups: Sequence[ChannelGroup]
) -> list[ConvLayer]:
    """The model's convolutions and the channel groups that set their widths (traced on one image)."""
    model = copy.deepcopy(model).eval()
    example = torch.zeros(1, *input_shape[1:])
    graph = ChannelGraph(model, example)
    theirs = [(g.name, g.channels) for g in graph.groups]
    if theirs != [(g.name, g.channels) for g in groups]:
        raise ConfigError(
            "the model's channel groups are not the profile's: pass the model the profile measured"
        )
    return find_layers(model, example, graph, SamplingConfig(), grid=2)


class Features:
    """Sub-network widths -> feature matrix (N, F), the same for every predictor."""

    def __init__(
        self, groups: Sequence[ChannelGroup], layers: Sequence[ConvLayer], lut: LayerTables | None = None
    ) -> None:
        self.groups, self.layers, self.lut = list(groups), list(layers), lut
        self.channels = torch.tensor([g.channels for g in self.groups], dtype=torch.float64)
        self._conv = ConvChannels(self.layers, self.groups)
        shape = [(layer.kernel[0] * layer.kernel[1], layer.out_height * layer.out_width) for layer in layers]
        kernel = torch.tensor([k for k, _ in shape], dtype=torch.float64)
        per_group = torch.tensor(
            [1.0 if layer.depthwise else 1.0 / layer.groups for layer in layers], dtype=torch.float64
        )
        first_call = torch.tensor(
            [0.0 if "#" in layer.name else 1.0 for layer in layers], dtype=torch.float64
        )
        self._mac_factor = kernel * torch.tensor([hw for _, hw in shape], dtype=torch.float64) * per_group
        self._param_factor = kernel * per_group * first_call  # a module called twice has its weights once
        self._depthwise = torch.tensor([layer.depthwise for layer in layers])
        dense = self.channels.unsqueeze(0)
        self.dense = {k: float(v[0]) for k, v in self._raw(dense).items()}

    @property
    def names(self) -> list[str]:
        return [f"frac:{g.name}" for g in self.groups] + ["macs", "params"] + (["lut"] if self.lut else [])

    # -- computing --------------------------------------------------------------------------------
    def widths_tensor(self, widths: Sequence[Mapping[str, int]]) -> Tensor:
        """(N, groups) float64 widths; a group missing from a dict counts as dense."""
        return torch.tensor(
            [[float(w.get(g.name, g.channels)) for g in self.groups] for w in widths], dtype=torch.float64
        ).reshape(len(widths), len(self.groups))

    def _raw(self, widths: Tensor) -> dict[str, Tensor]:
        c_in, c_out = self._conv(widths)
        dt = widths.dtype
        dw = self._depthwise.to(widths.device)
        c_in_eff = torch.where(dw, torch.ones_like(c_in), c_in)  # a depthwise filter sees one channel
        out = {
            "macs": (c_out * c_in_eff * self._mac_factor.to(dt)).sum(1),
            "params": (c_out * c_in_eff * self._param_factor.to(dt)).sum(1),
        }
        if self.lut is not None:
            out["lut"] = self.lut.per_layer(widths).sum(1)
        return out

    def from_widths(self, widths: Tensor) -> Tensor:
        """(N, F) features of (N, groups) widths; differentiable, in ``widths``' dtype."""
        raw = self._raw(widths)
        cols = [widths / self.channels.to(widths.dtype)]
        cols += [(raw[k] / self.dense[k]).unsqueeze(1) for k in ("macs", "params", "lut") if k in raw]
        return torch.cat(cols, dim=1)

    def __call__(self, widths: Sequence[Mapping[str, int]]) -> Tensor:
        return self.from_widths(self.widths_tensor(widths))

    def macs(self, widths: Sequence[Mapping[str, int]]) -> Tensor:
        """Absolute convolution MACs per image of each sub-network."""
        return self._raw(self.widths_tensor(widths))["macs"]

    # -- persistence ------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "groups": [[g.name, g.channels] for g in self.groups],
            "layers": [layer.to_dict() for layer in self.layers],
            "lut": self.lut.state() if self.lut is not None else None,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Features:
        groups = [ChannelGroup(name, int(ch), ()) for name, ch in state["groups"]]
        lut = LayerTables.from_state(state["lut"]) if state.get("lut") else None
        return cls(groups, [ConvLayer.from_dict(d) for d in state["layers"]], lut)


__all__ = ["Features", "layers_of"]
