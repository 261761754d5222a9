"""First-order Taylor importance from the gradients of a few calibration batches."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import Tensor, nn

from autoprune.errors import ConfigError
from autoprune.search.criteria._base import Batches, Criterion, or_zeros, register_criterion, untouched


@register_criterion
class Taylor(Criterion):
    """|w * dL/dw| summed over each channel's weights in the group's layers (Molchanov et al., CVPR 2019):
    the first-order estimate of how much the loss changes when the channel is removed.

    dL/dw is the gradient of the cross-entropy averaged over the calibration batches, taken in eval mode
    (BatchNorm statistics stay put) with ``torch.autograd.grad``, so the model's ``.grad`` is never touched.
    """

    name = "taylor"
    needs_data = True
    needs_grad = True

    def __init__(self) -> None:
        self._imp = tp.importance.GroupTaylorImportance(group_reduction="sum", normalizer=None)
        self._grads: dict[nn.Parameter, Tensor] | None = None

    def prepare(self, model: nn.Module, batches: Batches) -> None:
        if not batches:
            raise ConfigError("the taylor criterion needs calibration batches: pass batches=...")
        params = list(model.parameters())
        device = params[0].device
        total = [torch.zeros_like(p) for p in params]
        with untouched(model), torch.enable_grad():
            for p in params:
                p.requires_grad_(True)
            for x, y in batches:
                loss = F.cross_entropy(model(x.to(device)), y.to(device))
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                for t, g in zip(total, grads, strict=True):
                    if g is not None:
                        t += g
        self._grads = {p: t / len(batches) for p, t in zip(params, total, strict=True)}

    def __call__(self, group: tp.Group) -> Tensor:
        if self._grads is None:
            raise ConfigError("taylor has no gradients yet: score with channel_scores(..., batches=...)")
        grads = self._grads
        # Torch-Pruning's importance reads ``layer.weight.grad``: lend it the collected gradients.
        params = list(dict.fromkeys(p for dep, _ in group for p in _own_params(dep.target.module)))
        if any(p not in grads for p in params):
            raise ConfigError("taylor gradients were collected on another model: prepare on the scored model")
        saved = [p.grad for p in params]
        try:
            for p in params:
                p.grad = grads[p]
            return or_zeros(self._imp(group), group)
        finally:
            for p, g in zip(params, saved, strict=True):
                p.grad = g


def _own_params(module: object) -> list[nn.Parameter]:
    return list(module.parameters(recurse=False)) if isinstance(module, nn.Module) else []
