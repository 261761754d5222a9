"""Shared by the pair-removal criteria (``redundancy``, ``correlation``): which group members carry the
group's channels, a per-layer correlation matrix averaged over a group's layers, and the greedy order
"remove the lesser channel of the most similar remaining pair" turned into scores."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch_pruning.pruner import function

# The dependencies whose layer *produces* the group's channels: their weight rows are the filters.
FILTER_FNS = (
    function.prune_conv_out_channels,
    function.prune_depthwise_conv_out_channels,
    function.prune_linear_out_channels,
)
BATCHNORM_FNS = (function.prune_batchnorm_out_channels,)

UNRELATED = -1.0
"""Similarity of two channels that share no layer: the least possible correlation, never a pair."""


def members(group: tp.Group, handlers: tuple[object, ...]) -> Iterator[tuple[nn.Module, list[int], Tensor]]:
    """(module, its channel indices, the root channels they are) for the group's items handled by one of
    ``handlers``; items with channels outside the root's (None in ``root_idxs``) are skipped."""
    for item in group:
        dep = item.dep
        if dep.handler not in handlers or any(r is None for r in item.root_idxs):
            continue
        yield dep.target.module, list(item.idxs), torch.tensor(item.root_idxs)


def correlation_from_moments(total: Tensor, gram: Tensor, count: int) -> Tensor:
    """Pearson correlation [C, C] of C variables from their sums [C] and sums of products [C, C] over
    ``count`` samples; a constant (or all-zero) variable correlates 0 with every other one."""
    mean = total / count
    cov = gram / count - torch.outer(mean, mean)
    std = cov.diagonal().clamp_min(0).sqrt()
    ok = std > 1e-12 * std.max().clamp_min(1e-300)
    inv = torch.where(ok, 1 / std.clamp_min(1e-300), torch.zeros_like(std))
    corr = (cov * inv[:, None] * inv[None, :]).clamp(-1, 1)
    return (corr + corr.T) / 2  # exactly symmetric, so a pair's similarity does not depend on its order


def pearson(rows: Tensor) -> Tensor:
    """Pearson correlation [C, C] between the rows of ``rows`` [C, D]."""
    rows = rows.double()
    return correlation_from_moments(rows.sum(1), rows @ rows.T, rows.shape[1])


class PairSimilarity:
    """A group's channel-by-channel similarity, averaged over the layers that cover both channels."""

    def __init__(self, channels: int) -> None:
        self._sum = torch.zeros(channels, channels, dtype=torch.float64)
        self._count = torch.zeros(channels, channels, dtype=torch.float64)

    def add(self, sim: Tensor, roots: Tensor) -> None:
        """One layer's similarity ``sim`` [k, k] between its channels, which are root channels ``roots``."""
        self._sum[roots[:, None], roots[None, :]] += sim.double().cpu()
        self._count[roots[:, None], roots[None, :]] += 1

    def mean(self) -> Tensor:
        """[C, C]; pairs that no layer covers get ``UNRELATED``."""
        out = torch.full_like(self._sum, UNRELATED)
        seen = self._count > 0
        out[seen] = self._sum[seen] / self._count[seen]
        return out


def pair_removal_scores(sim: Tensor, worth: Tensor) -> Tensor:
    """Scores [C] from the order in which channels are removed (first removed = 0, last kept = C - 1).

    Channels of zero ``worth`` (dead) go first, lowest index first. Then, repeatedly: of the remaining
    channels' most similar pair, the one of smaller ``worth`` goes (on a tie, the higher index; pairs
    within 1e-9 of the most similar count as equally so, and the weakest of their members goes), so the
    top-k by score keep one channel of a cluster of near-duplicates before any second one.
    ``sim`` [C, C] is symmetric; its diagonal is ignored.
    """
    n = len(worth)
    worth = worth.double().cpu()
    sim = sim.double().cpu().clone()
    sim.fill_diagonal_(-torch.inf)
    order: list[int] = [int(i) for i in torch.nonzero(worth <= 0).flatten()]
    gone = torch.zeros(n, dtype=torch.bool)
    gone[order] = True
    sim[:, gone] = -torch.inf
    sim[gone, :] = -torch.inf
    best, partner = sim.max(1)  # each channel's most similar remaining channel
    while len(order) < n - 1:
        # Pairs within 1e-9 of the most similar are equally similar (exact duplicates differ only by
        # rounding, which varies with the CPU's BLAS): of those, the one whose weaker member is weakest.
        near = torch.nonzero(best >= best.max() - 1e-9).flatten().tolist()
        drops = []
        for i in near:
            j = int(partner[i])
            a, b = min(i, j), max(i, j)
            drops.append(a if worth[a] < worth[b] else b)
        drop = min(drops, key=lambda d: (float(worth[d]), -d))
        order.append(drop)
        sim[:, drop] = -torch.inf
        sim[drop, :] = -torch.inf
        best[drop] = -torch.inf
        stale = torch.nonzero(partner == drop).flatten()
        stale = stale[stale != drop]
        if len(stale):
            best[stale], partner[stale] = sim[stale].max(1)
    removed = set(order)
    order += [i for i in range(n) if i not in removed]
    scores = torch.empty(n)
    scores[torch.tensor(order, dtype=torch.long)] = torch.arange(n, dtype=torch.float32)
    return scores
