"""STAMP's mask generator (Set-based Task-Adaptive Meta-Pruning; seed 002): a set encoding of a sample of
the target data in, keep scores for every channel of every group out.

The set encoder is DeepSets (Zaheer et al. 2017): ``ρ(mean_i φ(x_i))`` over per-example features ``x_i``
(the dense network's penultimate features: the input of its last linear layer), so the task embedding does
not depend on the order of the examples nor, through the mean, on how many there are. The features are
standardised with the reference data's mean and standard deviation, kept in the generator, so a target
whose features lie elsewhere (another dataset) is read on the same scale.

A group's per-channel score (> 0: keep) is ``base + head(embedding)``: ``base`` a learned per-channel
logit, initialised from the magnitude criterion (``0.25 · z``, ``z`` the channel's standardised log
importance, shifted so the ``open_init`` largest channels are open), and ``head`` one linear layer per
group of the task embedding (squashed by tanh into (-1, 1), so the task term stays on the base's scale
for a target whose features lie far from the reference's), initialised at zero: before meta-training
the generator is the magnitude criterion at the starting widths, and meta-training learns what in the
data moves the mask from there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from autoprune.graph import ChannelGroup

_SLOPE = 0.25  # the score per standard deviation of log importance, as W-Gates' GateNet starts


class SetEncoder(nn.Module):
    """DeepSets: (S, inputs) examples -> (embed,) task embedding, invariant to their order."""

    def __init__(self, inputs: int, *, hidden: int = 64, embed: int = 32) -> None:
        super().__init__()
        self.phi = nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.rho = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, embed))

    def forward(self, x: Tensor) -> Tensor:
        return self.rho(self.phi(x).mean(0))  # (S, inputs) -> (S, hidden) -> (hidden,) -> (embed,)


class MaskGenerator(nn.Module):
    """Per group, keep scores of its channels from a set of penultimate features (see the module's
    docstring). ``importance``: per group, one positive score per channel (e.g. L1 norms); ``feature_mean``
    and ``feature_std`` standardise the features (the reference data's)."""

    def __init__(
        self,
        groups: Sequence[ChannelGroup],
        importance: Mapping[str, Tensor],
        *,
        feature_mean: Tensor,
        feature_std: Tensor,
        open_init: Mapping[str, int] | None = None,
        hidden: int = 64,
        embed: int = 32,
    ) -> None:
        super().__init__()
        self.names = [g.name for g in groups]
        self.sizes = [g.channels for g in groups]
        self.encoder = SetEncoder(feature_mean.numel(), hidden=hidden, embed=embed)
        self.head = nn.Linear(embed, sum(self.sizes))  # every group's task term, side by side
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.base = nn.Parameter(torch.cat([_base_logits(importance[g.name], g, open_init) for g in groups]))
        self.register_buffer("feature_mean", feature_mean.detach().clone().float())
        self.register_buffer("feature_std", feature_std.detach().clone().float().clamp_min(1e-6))

    def embed(self, features: Tensor) -> Tensor:
        """(S, inputs) features of a sample of the task -> (embed,)."""
        mean, std = self.get_buffer("feature_mean"), self.get_buffer("feature_std")
        return torch.tanh(self.encoder((features - mean) / std))  # bounded: a far-off target cannot blow up

    def forward(self, features: Tensor) -> dict[str, Tensor]:
        """(S, inputs) features -> per group, (channels,) keep scores."""
        logits = self.base + self.head(self.embed(features))  # (total channels,)
        return dict(zip(self.names, torch.split(logits, self.sizes), strict=True))


def _base_logits(importance: Tensor, group: ChannelGroup, open_init: Mapping[str, int] | None) -> Tensor:
    """``0.25 · (z - t)``: ``z`` the standardised log importance, ``t`` halfway between the k-th and the
    (k+1)-th largest ``z`` (k = ``open_init``'s width; all open: 4 standard deviations under the least)."""
    log = torch.log(importance.detach().float().abs() + 1e-8)
    z = (log - log.mean()) / (log.std(unbiased=False) + 1e-6)
    k = (open_init or {}).get(group.name, group.channels)
    ranked = torch.sort(z, descending=True).values
    threshold = float(ranked[-1]) - 4.0 if k >= group.channels else float(ranked[k - 1] + ranked[k]) / 2
    return _SLOPE * (z - threshold)
