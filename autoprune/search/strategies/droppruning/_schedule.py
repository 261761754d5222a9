"""Drop Pruning (Jia, Xiao, Zhou et al. 2018) at channel level: iterative prune / fine-tune in which every
step *drops out* (prunes) channels sampled stochastically among the least important and *drops in*
(restores) some pruned ones, so that a channel judged unimportant early can come back.

The schedule (``drop_prune``) takes each channel group from its dense width to its target width in
``steps`` steps, step t's width following Zhu & Gupta's cubic ("To prune, or not to prune", 2017):
``w_t = target + (dense − target)·(1 − t/steps)³``, rounded, exactly the target at the last step (the
intermediate widths need not be on the search grid: channels are masked, not removed). Step t:

1. drop in: each channel of a group pruned at an earlier step returns independently with probability
   ``p_in``; its filter values (every member layer's parameters and buffers per output channel: filter,
   bias, BatchNorm scale, shift and running statistics) are copied back from the dense network's
   (``GatedNetwork.restore``), since while masked they decay and BatchNorm's statistics drift;
2. drop out: the channels kept before the step are ranked by filter magnitude on the current weights
   (``GatedNetwork.filter_norms``); exactly as many as take the group to ``w_t`` plus one per channel
   dropped in are removed, drawn without replacement from the pool of the ``pool``·need least important:
   each draw takes the k-th least important still in the pool with probability ∝ ``p_out``^k, so with
   ``p_out = 0`` the least important go (deterministic iterative pruning) and as ``p_out`` → 1 any of
   the pool alike. The channels just dropped in are not candidates at their own step;
3. fine-tune the masked network (``fine_tune(gated, step)``; the network's code is untouched, the masks
   are ``GatedNetwork.fix``).

The paper drops weights and each candidate independently with probability ``p_out``; here the count is
exact so each step lands on its width, and ``p_out`` instead sets how far the choice strays from the
least important.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from autoprune.errors import ConfigError
from autoprune.graph import ChannelGroup, Widths
from autoprune.search.gating import GatedNetwork


@dataclass(frozen=True)
class DropSettings:
    """Drop-out and drop-in probabilities, the number of prune / fine-tune steps, and the drop-out
    pool's size as a multiple of the channels a step removes."""

    p_out: float = 0.5
    p_in: float = 0.1
    steps: int = 4
    pool: float = 2.0

    def __post_init__(self) -> None:
        if not 0 <= self.p_out < 1:
            raise ConfigError(f"droppruning: --drop-out must be in [0, 1), got {self.p_out}: try 0.5")
        if not 0 <= self.p_in < 1:
            raise ConfigError(f"droppruning: --drop-in must be in [0, 1), got {self.p_in}: try 0.1")
        if self.steps < 1:
            raise ConfigError(f"droppruning: --drop-steps must be >= 1, got {self.steps}: try 4")
        if self.pool < 1:
            raise ConfigError(f"droppruning: the drop-out pool must be >= 1 times the need, got {self.pool}")


@dataclass(frozen=True)
class DropStep:
    """One step: the widths it reached, and per group the channels dropped in and out."""

    widths: Widths
    dropped_in: dict[str, list[int]]
    dropped_out: dict[str, list[int]]


@dataclass
class DropResult:
    """The fine-tuned network (ungated), the channels each group keeps at the end, every channel's
    filter magnitude at the end (``GatedNetwork.filter_norms``), and the steps."""

    module: nn.Module
    keep: dict[str, list[int]]
    importance: dict[str, Tensor]
    steps: list[DropStep] = field(default_factory=list)

    def scores(self) -> dict[str, Tensor]:
        """Channel scores whose highest ``len(keep[g])`` per group are exactly the kept channels: 2 plus
        a tie-break in [0, 1) for kept channels, the tie-break alone for pruned ones. The tie-break ranks
        by final filter magnitude, so a narrower network pruned from these scores keeps the largest
        filters of the kept channels."""
        out = {}
        for name, kept in self.keep.items():
            s = self.importance[name].detach().double().cpu()
            tie = torch.argsort(torch.argsort(s)).double() / len(s)  # ranks, in [0, 1)
            out[name] = tie.index_add(0, torch.as_tensor(kept), torch.full((len(kept),), 2.0, dtype=s.dtype))
        return out


def cubic_schedule(dense: int, target: int, steps: int) -> list[int]:
    """Widths after each of ``steps`` steps from ``dense`` to ``target``: cubic, non-increasing, the last
    exactly ``target``."""
    out, prev = [], dense
    for t in range(1, steps + 1):
        w = target + (dense - target) * (1 - t / steps) ** 3
        prev = min(prev, max(target, round(w)))
        out.append(prev)
    out[-1] = target
    return out


def drop_out(
    kept: Sequence[int], importance: Tensor, count: int, *, p_out: float, pool: float,
    generator: torch.Generator,
) -> list[int]:  # fmt: skip
    """``count`` of the ``kept`` channels to remove, drawn without replacement among the ``pool``·count
    least important (by ``importance``, one per channel of the group): each draw takes the k-th least
    important still in the pool with probability ∝ ``p_out``^k (``p_out = 0``: the least important)."""
    if count <= 0:
        return []
    if count > len(kept):
        raise ValueError(f"cannot remove {count} of {len(kept)} channels")
    order = sorted(kept, key=lambda c: (float(importance[c]), c))  # least important first
    candidates = order[: min(len(order), max(count, math.ceil(pool * count)))]
    removed: list[int] = []
    for _ in range(count):
        if p_out == 0:
            k = 0
        else:
            weights = torch.tensor([p_out**k for k in range(len(candidates))], dtype=torch.float64)
            k = int(torch.multinomial(weights, 1, generator=generator))
        removed.append(candidates.pop(k))
    return sorted(removed)


def drop_in(pruned: Sequence[int], *, p_in: float, limit: int, generator: torch.Generator) -> list[int]:
    """Each ``pruned`` channel independently with probability ``p_in``, at most ``limit`` of them."""
    if p_in == 0 or not pruned:
        return []
    back = [c for c, u in zip(pruned, torch.rand(len(pruned), generator=generator).tolist(), strict=True)
            if u < p_in]  # fmt: skip
    if len(back) > limit:
        back = [back[i] for i in sorted(torch.randperm(len(back), generator=generator)[:limit].tolist())]
    return back


def drop_prune(
    net: nn.Module,
    example: Tensor,
    groups: Sequence[ChannelGroup],
    target: Widths,
    *,
    dense: nn.Module,
    fine_tune: Callable[[GatedNetwork, int], None],
    settings: DropSettings | None = None,
    seed: int = 0,
) -> DropResult:
    """Prune ``net`` (in place) from dense to ``target`` widths with the drop schedule; ``dense`` holds
    the weights dropped-in channels are restored from; ``fine_tune(gated, step)`` trains the masked
    network after each step. ``seed`` draws the drops (the fine-tunes' randomness is theirs)."""
    settings = settings or DropSettings()
    gen = torch.Generator().manual_seed(seed)
    gated = GatedNetwork(net, example, groups)
    plans = {g.name: cubic_schedule(g.channels, target[g.name], settings.steps) for g in groups}
    keep = {g.name: list(range(g.channels)) for g in groups}
    steps: list[DropStep] = []
    for t in range(settings.steps):
        importance = gated.filter_norms()
        back_in: dict[str, list[int]] = {}
        gone: dict[str, list[int]] = {}
        for g in groups:
            width = plans[g.name][t]
            kept = keep[g.name]
            pruned = sorted(set(range(g.channels)) - set(kept))
            back = drop_in(pruned, p_in=settings.p_in, limit=width, generator=gen)
            out = drop_out(
                kept, importance[g.name], len(kept) + len(back) - width, p_out=settings.p_out,
                pool=settings.pool, generator=gen,
            )  # fmt: skip
            keep[g.name] = sorted((set(kept) - set(out)) | set(back))
            back_in[g.name], gone[g.name] = back, out
        gated.restore(dense, back_in)
        gated.fix(keep)
        steps.append(DropStep({n: len(k) for n, k in keep.items()}, back_in, gone))
        fine_tune(gated, t)
    importance = gated.filter_norms()
    gated.remove()
    return DropResult(net.eval(), keep, importance, steps)
