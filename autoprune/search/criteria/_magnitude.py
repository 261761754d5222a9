"""Data-free criteria from the weights: group L1/L2 magnitude (Torch-Pruning's) and BatchNorm scale."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch_pruning.pruner import function

from autoprune.search.criteria._base import Criterion, group_channels, or_zeros, register_criterion


class _Magnitude(Criterion):
    p: ClassVar[int]

    def __init__(self) -> None:
        # Summed over the coupled layers (output filters, BN scales, consumers' input slices). No
        # per-group normaliser: scores are only compared within a group, and Torch-Pruning's default
        # "mean" normaliser divides by zero on an all-zero group.
        self._imp = tp.importance.GroupMagnitudeImportance(p=self.p, group_reduction="sum", normalizer=None)

    def __call__(self, group: tp.Group) -> Tensor:
        return or_zeros(self._imp(group), group)


@register_criterion
class L1(_Magnitude):
    """Sum of |w| of each channel's weights over the group's layers (Li et al., ICLR 2017)."""

    name = "l1"
    p = 1


@register_criterion
class L2(_Magnitude):
    """Sum of w² of each channel's weights over the group's layers."""

    name = "l2"
    p = 2


@register_criterion
class BNScale(Criterion):
    """|gamma| of the BatchNorms that scale each channel, averaged per channel over the coupled BNs
    (network slimming, Liu et al., ICCV 2017).

    Fallbacks, so every group scores: a group without an affine BatchNorm (a conv feeding no BN) is
    scored by L1 magnitude (only the order within a group matters); in a group where only some channels
    pass a BN (a concat branch without one), the others get the group's mean |gamma|, so they are
    neither kept nor dropped first. Torch-Pruning's ``BNScaleImportance`` divides by the number of BNs
    in the group instead, which ranks such a branch's channels low for lack of a BN.
    """

    name = "bn_scale"

    def __init__(self) -> None:
        self._fallback = L1()

    @torch.no_grad()
    def __call__(self, group: tp.Group) -> Tensor:
        total = torch.zeros(group_channels(group))
        count = torch.zeros_like(total)
        for item in group:
            bn = item.dep.target.module
            if (
                not isinstance(bn, nn.modules.batchnorm._BatchNorm)
                or not bn.affine
                or item.dep.handler != function.prune_batchnorm_out_channels
                or any(r is None for r in item.root_idxs)
            ):
                continue
            root = torch.tensor(item.root_idxs)
            total.index_add_(0, root, bn.weight.detach()[item.idxs].abs().float().cpu())
            count.index_add_(0, root, torch.ones(len(root)))
        if not count.any():
            return self._fallback(group)
        scaled = count > 0
        scores = total / count.clamp(min=1)
        scores[~scaled] = scores[scaled].mean()
        return scores
