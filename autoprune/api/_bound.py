"""What a latency predictor binds a run to: the model it was profiled on, the input shape, the device
(its backend, fingerprint checked) and the width grid. ``search`` and ``adapt`` start from it."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from autoprune.config import ProtocolConfig
from autoprune.data import DatasetSplits
from autoprune.errors import ConfigError
from autoprune.graph import ChannelGraph, ChannelGroup, Widths
from autoprune.latency import LatencyBackend, Timing, get_backend, time_widths
from autoprune.models import load_model
from autoprune.predictor import LatencyPredictor
from autoprune.search import WidthSpace, space_for


@dataclass(frozen=True)
class Bound:
    net: nn.Module  # the dense network, as loaded
    classes: int  # its number of classes
    input_shape: list[int]  # as profiled: [batch, C, H, W]
    example: Tensor  # one input (batch 1)
    groups: list[ChannelGroup]
    backend: LatencyBackend
    protocol: ProtocolConfig
    space: WidthSpace

    def tolerance(self, margin: float | None) -> float:
        """The least margin a finalist's measurement needs here: ``margin`` (--margin) or the protocol's."""
        return self.protocol.max_deviation if margin is None else margin

    def time(self, widths: list[Widths]) -> list[Timing]:
        """The dense network pruned to each of ``widths``, timed interleaved as the profile was."""
        return time_widths(
            self.net, widths, backend=self.backend, input_shape=self.input_shape, protocol=self.protocol
        )

    def time_beside_dense(
        self, widths: list[Widths], *, tolerance: float, max_seconds: float
    ) -> list[Timing]:
        """Each of ``widths`` timed round for round beside the dense network (its ratio to it), repeated
        up to ``max_seconds`` while a ratio's spread exceeds ``tolerance``."""
        return time_widths(
            self.net, widths, backend=self.backend, input_shape=self.input_shape, protocol=self.protocol,
            beside_dense=True, tolerance=tolerance, max_seconds=max_seconds,
        )  # fmt: skip


def bind(
    model: str, *, checkpoint: str | Path, lp: LatencyPredictor, num_classes: int,
    data: Mapping[str, DatasetSplits],
) -> Bound:  # fmt: skip
    """Load ``model`` and check it, every dataset of ``data`` (spec -> splits) and this machine against
    the predictor's profile, each failure in one line naming the fix."""
    net, classes = load_model(model, checkpoint=checkpoint, num_classes=num_classes)
    input_shape = list(lp.meta["input_shape"])
    for spec, ds in data.items():
        if list(ds.input_shape) != input_shape[1:]:
            raise ConfigError(
                f"the profile measured inputs of {input_shape[1:]} but {spec} gives {list(ds.input_shape)}: "
                "pass --image-size to match, or profile at this size"
            )
    example = torch.zeros(1, *input_shape[1:])
    groups = ChannelGraph(copy.deepcopy(net), example).groups
    lp.check_model(groups, model)
    backend = get_backend(lp.meta["backend"], **lp.meta["backend_settings"])
    lp.check_device(backend.fingerprint())
    protocol = ProtocolConfig.from_dict(lp.meta["protocol"])
    space = space_for(groups, lp.meta["sampling"])
    return Bound(net, classes, input_shape, example, groups, backend, protocol, space)
