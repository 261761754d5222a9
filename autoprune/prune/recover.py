"""Recovering accuracy right after pruning: re-estimate BatchNorm statistics on a few batches.

Removing channels changes the statistics every later BatchNorm sees, so the running mean/var learned
on the dense network no longer match; re-estimating them costs a few forward passes and no training.
(Distillation from the dense network during fine-tuning is ``autoprune.training.train(teacher=...)``.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from autoprune.errors import ConfigError


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Sequence[tuple[Tensor, Tensor]]) -> None:
    """Reset every BatchNorm's running statistics and re-estimate them on ``batches``; the model is
    left in eval mode. Weights are untouched: forward passes only, without gradients."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    bns = [bn for bn in bns if bn.track_running_stats]
    if not bns:
        return
    if not batches:
        raise ConfigError("BatchNorm recalibration needs batches: pass calibration_batches(dataset, count=8)")
    momenta = [bn.momentum for bn in bns]
    device = next(model.parameters()).device
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average over the batches, not an exponential one
    model.train()
    try:
        for x, _ in batches:
            model(x.to(device))
    finally:
        for bn, momentum in zip(bns, momenta, strict=True):
            bn.momentum = momentum
        model.eval()
