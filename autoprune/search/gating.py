"""Weight-dependent gates (W-Gates; Li, Wu, Liu et al. 2020) on any network Torch-Pruning can group.

Each channel group gets one small gate network. It reads every channel's filter weights: the rows of
that channel in each member layer whose output channels the group prunes (a convolution's filter, a
linear layer's row, a norm layer's scale), each layer's weights divided by their RMS so that layers of
any scale weigh alike, concatenated. A coupled group (a residual stage) therefore gets one gate vector,
read from all its coupled filters together, and shared by every layer it couples.

The gate's score is ``bias + a · z + MLP(x)``: ``z`` is the filter's log L1 norm standardised over the
group, ``x`` its normalised weights (detached: the gates read the weights, only the task loss trains
them). ``a`` starts at 0.25 and the MLP's output layer at zero, so the gates start all on (score ~ 1),
or with ``open_init`` on the largest filters, and as the latency loss lowers the bias the smallest
filters close first, until the MLP and ``a`` learn otherwise. The gate is hard in the forward pass (1
where the score is > 0, and at least the group's minimum number of channels: the highest scores) with a
straight-through gradient: d gate / d score = 1.

Gates multiply, through forward hooks, the output of every member layer of the group (a convolution
*and* its BatchNorm, so a closed channel is exactly zero, not the BatchNorm's shift). The network's code
is untouched; ``remove()`` takes the hooks off. With BatchNorm in eval mode the gated network computes
what the physically pruned one does (``tests/search/test_gates.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn

from autoprune.errors import ConfigError
from autoprune.graph import ChannelGraph, ChannelGroup

_EPS = 1e-12


@dataclass(frozen=True)
class _Member:
    """One layer of a group: which of its output channels (``idxs``) are the group's channels
    ``root`` (positions in the group), and along which dimension of its output channels lie."""

    module: nn.Module
    idxs: Tensor
    root: Tensor
    channels: int  # the layer's output channels
    dim: int


class GateNet(nn.Module):
    """One group's gate: per channel, ``bias + a · z + MLP(x)`` (see the module's docstring)."""

    def __init__(self, inputs: int, *, hidden: int = 16, bias: float = 1.0) -> None:
        super().__init__()
        self.hidden = nn.Linear(inputs, hidden)
        self.out = nn.Linear(hidden, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.norm_weight = nn.Parameter(torch.tensor(0.25))
        self.bias = nn.Parameter(torch.tensor(float(bias)))

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return self.bias + self.norm_weight * z + self.out(torch.relu(self.hidden(x))).squeeze(-1)


def straight_through(scores: Tensor, min_keep: int) -> Tensor:
    """Hard 0/1 gates (score > 0; if fewer than ``min_keep`` are open, the ``min_keep`` highest) with
    the identity as their gradient."""
    hard = (scores > 0).to(scores.dtype)
    if int(hard.sum()) < min_keep:
        hard = torch.zeros_like(scores).scatter(0, torch.topk(scores.detach(), min_keep).indices, 1.0)
    return hard + (scores - scores.detach())  # exactly ``hard``: no rounding however large the scores


class GatedNetwork(nn.Module):
    """``net`` with a gate network per channel group of ``groups`` (traced on ``example``).

        The gates start open, or with ``open_init`` (channels per group) open on the largest filters.
        ``forward`` computes every group's gates from the current weights, then runs ``net`` with them;
        ``forward(x, scores)`` takes the scores from elsewhere instead (the gate networks are then unused).
    ``counts()`` are the open channels per group of that last forward pass (differentiable). ``fix(keep)``
        replaces the gates by fixed 0/1 masks (those channels open), e.g. to compare with the pruned network.
    """

    def __init__(
        self,
        net: nn.Module,
        example: Tensor,
        groups: Sequence[ChannelGroup],
        *,
        min_ratio: float = 0.0,
        hidden: int = 16,
        seed: int = 0,
        open_init: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        graph = ChannelGraph(net, example)
        theirs = {g.name: g.channels for g in graph.groups}
        for g in groups:
            if theirs.get(g.name) != g.channels:
                raise ConfigError(
                    f"group '{g.name}' ({g.channels} channels) is not a channel group of this network: "
                    "gate the network the groups were traced on"
                )
        self.groups = list(groups)
        self.min_keep = {g.name: max(1, math.ceil(min_ratio * g.channels - 1e-9)) for g in self.groups}
        self._members = {g.name: _members(graph, net, g.name) for g in self.groups}
        for g in self.groups:
            if not any(_filter_rows(m) is not None for m in self._members[g.name]):
                raise ConfigError(f"group '{g.name}' has no layer with weights to gate on")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.gates = nn.ModuleList(
                GateNet(self._features(g.name)[0].shape[1], hidden=hidden) for g in self.groups
            )
        for g, module in zip(self.groups, self.gates, strict=True):
            gate = cast(GateNet, module)
            k = (open_init or {}).get(g.name, g.channels)
            if k < g.channels:  # open exactly the k largest filters: the bias between the k-th and next
                z = torch.sort(self._features(g.name)[1], descending=True).values
                with torch.no_grad():
                    gate.bias.fill_(-float(gate.norm_weight) * float(z[k - 1] + z[k]) / 2)
        self._open: dict[str, Tensor] = {}
        self._fixed: dict[str, Tensor] | None = None
        self._hooks = [
            m.module.register_forward_hook(self._hook(g.name, m))
            for g in self.groups
            for m in self._members[g.name]
        ]

    # -- gates ------------------------------------------------------------------------------------
    def _features(self, name: str) -> tuple[Tensor, Tensor]:
        """(channels, inputs) normalised filter weights and (channels,) standardised log L1 norms."""
        rows, norms = [], []
        for m in self._members[name]:
            w = _filter_rows(m)
            if w is None:
                continue
            w = w.detach()  # the gates read the weights; only the task loss trains them
            w = w / (w.pow(2).mean().sqrt() + _EPS)
            rows.append(w)
            norms.append(w.abs().mean(1))
        x = torch.cat(rows, dim=1)
        log_norm = torch.log(torch.stack(norms).mean(0) + 1e-8)
        z = (log_norm - log_norm.mean()) / (log_norm.std(unbiased=False) + 1e-6)
        return x, z

    def filter_norms(self) -> dict[str, Tensor]:
        """Per group, (channels,) each channel's filter magnitude on the current weights: the mean |w| of
        its rows, each member layer's weights divided by their RMS, averaged over the layers (what the
        gates' ``z`` standardises; ``droppruning`` ranks channels by it)."""
        out = {}
        for g in self.groups:
            norms = []
            for m in self._members[g.name]:
                w = _filter_rows(m)
                if w is not None:
                    w = w.detach()
                    norms.append((w / (w.pow(2).mean().sqrt() + _EPS)).abs().mean(1))
            out[g.name] = torch.stack(norms).mean(0)
        return out

    def restore(self, source: nn.Module, channels: Mapping[str, Sequence[int]]) -> None:
        """Copy from ``source`` (a network of the same architecture, e.g. the dense one) what each group's
        named channels hold in every member layer: the values per output channel of its parameters and
        buffers (a convolution's filter and bias, a norm layer's scale, shift and running statistics).
        The next layers' weights reading those channels are left as they are."""
        names = {id(m): n for n, m in self.net.named_modules()}
        theirs = dict(source.named_modules())
        with torch.no_grad():
            for name, picked in channels.items():
                if not len(picked):
                    continue
                root = torch.as_tensor(list(picked), dtype=torch.long)
                for m in self._members[name]:
                    rows = m.idxs[torch.isin(m.root, root)]  # the layer's channels of those group channels
                    src = theirs[names[id(m.module)]]
                    own = [*m.module.named_parameters(recurse=False), *m.module.named_buffers(recurse=False)]
                    transposed = isinstance(m.module, nn.modules.conv._ConvTransposeNd)
                    for key, t in own:
                        dim = 1 if transposed and key == "weight" else 0
                        if t.dim() == 0 or t.shape[dim] != m.channels:
                            continue
                        t.index_copy_(dim, rows, getattr(src, key).detach().to(t).index_select(dim, rows))

    def scores(self) -> dict[str, Tensor]:
        """Every group's gate scores (one per channel; > 0 is open)."""
        return {
            g.name: gate(*self._features(g.name)) for g, gate in zip(self.groups, self.gates, strict=True)
        }

    def forward(self, x: Tensor, scores: Mapping[str, Tensor] | None = None) -> Tensor:
        """Run ``net`` gated by the gate networks' scores, or by ``scores`` (one per channel of every
        group) that another module computes: STAMP's mask generator gates the network through here."""
        if self._fixed is not None:
            self._open = dict(self._fixed)
        else:
            by = self.scores() if scores is None else scores
            self._open = {g.name: straight_through(by[g.name], self.min_keep[g.name]) for g in self.groups}
        return self.net(x)

    def counts(self) -> Tensor:
        """(groups,) open channels per group in the last forward pass, in ``groups`` order."""
        if not self._open:
            raise RuntimeError("counts() needs a forward pass first")
        return torch.stack([self._open[g.name].sum() for g in self.groups])

    def fix(self, keep: Mapping[str, Sequence[int]] | None) -> None:
        """Open exactly the channels ``keep`` names per group (a group not named stays all open), or
        with None go back to the gate networks."""
        if keep is None:
            self._fixed = None
            return
        masks = {}
        for g in self.groups:
            mask = torch.ones(g.channels)
            if g.name in keep:
                mask = torch.zeros(g.channels).index_fill(0, torch.as_tensor(list(keep[g.name])), 1.0)
            masks[g.name] = mask
        self._fixed = masks

    def remove(self) -> nn.Module:
        """Take the hooks off; return the network, now ungated."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        return self.net

    def _hook(self, name: str, member: _Member) -> Callable[[nn.Module, object, Tensor], Tensor]:
        def gate_output(_module: nn.Module, _inputs: object, output: Tensor) -> Tensor:
            gates = self._open.get(name)
            if gates is None:
                return output
            mask = torch.ones(member.channels, dtype=output.dtype, device=output.device)
            mask = mask.index_put((member.idxs,), gates[member.root].to(output.dtype))
            shape = [1] * output.dim()
            shape[member.dim] = member.channels
            return output * mask.view(shape)

        return gate_output


def _members(graph: ChannelGraph, net: nn.Module, name: str) -> list[_Member]:
    """The layers of group ``name`` whose output channels it prunes (each once)."""
    modules = {id(m) for m in net.modules()}
    out: list[_Member] = []
    seen: set[int] = set()
    for item in graph.group(name).items:
        module = item.dep.target.module
        if (
            not graph.dg.is_out_channel_pruning_fn(item.dep.handler)
            or id(module) not in modules
            or id(module) in seen
        ):
            continue
        seen.add(id(module))
        dim = -1 if isinstance(module, nn.Linear) else 1
        out.append(
            _Member(
                module,
                torch.as_tensor([int(i) for i in item.idxs], dtype=torch.long),
                torch.as_tensor([int(i) for i in item.root_idxs], dtype=torch.long),
                int(graph.dg.get_out_channels(module)),
                dim,
            )
        )
    return out


def _filter_rows(m: _Member) -> Tensor | None:
    """(group channels, weights per channel) of ``m``'s weights, rows in group order; None for a layer
    without a weight per output channel."""
    weight = getattr(m.module, "weight", None)
    if not isinstance(weight, Tensor):
        return None
    if isinstance(m.module, nn.modules.conv._ConvTransposeNd):
        weight = weight.transpose(0, 1)
    if weight.dim() == 0 or weight.shape[0] != m.channels:
        return None
    rows = weight.reshape(m.channels, -1)[m.idxs]
    return torch.zeros_like(rows).index_copy(0, m.root, rows)


LatencyOfFractions = Callable[[Tensor], Tensor]
"""Latency (ms) of kept fractions per group (..., groups), differentiable (``predict_fractions``)."""


def latency_loss(latency_ms: Tensor, budget_ms: float, *, weight: float, pull: float = 0.0) -> Tensor:
    """weight · (max(0, L̂ − B) + pull · max(0, B − L̂)) / B."""
    over = torch.relu(latency_ms - budget_ms)
    under = torch.relu(budget_ms - latency_ms)
    return weight * (over + pull * under) / budget_ms
