"""HALP (Shen, Yin, Molchanov et al., NeurIPS 2022, "Structural pruning via latency-saliency knapsack"):
prune progressively *during* one fine-tune, each step a latency-saliency knapsack on fresh importance.

The schedule (``halp_prune``) trains the network once for the fine-tune's epochs (one SGD run, one
cosine learning-rate schedule) and, evenly spread over the first ``prune_fraction`` of its batches,
takes ``steps`` pruning steps. Step k:

1. importance: each kept channel's first-order Taylor saliency |Σ g·w| over every parameter of the
   group's coupled layers (a convolution's filter and bias, a norm layer's scale and shift; a residual
   group's layers together), per batch, averaged over the batches trained since step k − 1
   (``TaylorMasks``: the gradient of a 0/1 channel mask is exactly that sum);
2. knapsack: from the current widths, ``allocation.greedy_path`` steps groups down the width grid, the
   step losing the least importance (the sum of the channels it drops, best channels kept) per
   millisecond the latency predictor says it saves, until the prediction is within step k's target;
3. each group keeps its most important channels; the others are masked for the rest of the training
   and never come back.

The targets fall geometrically from the dense network's predicted latency D to the budget B:
T_k = D · (B / D)^(k / steps), so every step asks for the same relative speed-up and the last is B.
The batches after the last step recover the pruned network. Importance keeps being averaged there: it
ranks the kept channels for narrower fallbacks. At the end the pruned channels' parameters are zeroed
(``GatedNetwork.restore`` from a zeroed copy), so the dense-shaped weights compute what the pruned
network does.

Unlike the paper: widths are on the search's grid (the profile's rounding), latency comes from the
search's predictor (a lookup-table sum only when that is the predictor), importance is raw |Σ g·w|
(the paper squares it), not normalised per group, and the paper's augmented knapsack solver is
the greedy one of ``search.allocation``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from autoprune import training
from autoprune.errors import ConfigError
from autoprune.graph import ChannelGroup, Widths
from autoprune.search.allocation import greedy_path
from autoprune.search.gating import GatedNetwork
from autoprune.search.space import WidthSpace


@dataclass(frozen=True)
class HalpSettings:
    """How many pruning steps, spread over which first fraction of the fine-tune's batches."""

    steps: int = 10
    prune_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"halp: --halp-steps must be >= 1, got {self.steps}: try 10")
        if not 0 < self.prune_fraction <= 1:
            raise ConfigError(
                f"halp: --halp-prune-fraction must be in (0, 1], got {self.prune_fraction}: try 0.5"
            )


def latency_targets(dense_ms: float, budget_ms: float, steps: int) -> list[float]:
    """Each step's latency target: geometric from ``dense_ms`` to ``budget_ms``, the last exactly it."""
    out = [dense_ms * (budget_ms / dense_ms) ** (k / steps) for k in range(1, steps + 1)]
    out[-1] = budget_ms
    return out


def step_batches(total: int, settings: HalpSettings) -> list[int]:
    """After how many trained batches (of ``total``) each step prunes: evenly over the first
    ``prune_fraction`` of them, at most one step per batch (fewer steps when there are fewer batches)."""
    span = max(1, math.ceil(settings.prune_fraction * total - 1e-9))
    steps = min(settings.steps, span)
    return [math.ceil(k * span / steps - 1e-9) for k in range(1, steps + 1)]


class TaylorMasks(nn.Module):
    """``net`` with a 0/1 mask on every channel of ``groups`` (``GatedNetwork``'s hooks: the mask
    multiplies the outputs of every member layer of the group), that collects Taylor importance.

    The masks are leaf tensors at 1 (open) and the gates pass their gradient straight through, so after
    a backward pass a channel's mask gradient is Σ_layers Σ_positions dL/dy · y over the outputs y it
    gates: exactly Σ g·w over the parameters of that channel in those layers (each layer is linear in
    its own filter, bias, scale and shift). ``importance()`` is |that| per batch, averaged over the
    batches since ``reset()``."""

    def __init__(self, net: nn.Module, example: Tensor, groups: Sequence[ChannelGroup]) -> None:
        super().__init__()
        self.gated = GatedNetwork(net, example, groups)
        device = next(net.parameters()).device
        # ``straight_through`` opens a channel whose score is > 0: +1 open, -1 masked.
        self.masks = {g.name: torch.ones(g.channels, device=device, requires_grad=True) for g in groups}
        self._sum = {g.name: torch.zeros(g.channels, dtype=torch.float64) for g in groups}
        self._batches = {g.name: 0 for g in groups}
        for name, mask in self.masks.items():
            mask.register_post_accumulate_grad_hook(self._collect(name))

    def _collect(self, name: str) -> Callable[[Tensor], None]:
        def collect(mask: Tensor) -> None:
            assert mask.grad is not None
            self._sum[name] += mask.grad.detach().abs().double().cpu()
            self._batches[name] += 1
            mask.grad = None  # one batch at a time: the next backward starts from nothing

        return collect

    def forward(self, x: Tensor) -> Tensor:
        return self.gated(x, self.masks)

    def batches(self) -> int:
        """Batches collected since ``reset()``."""
        return min(self._batches.values())

    def importance(self) -> dict[str, Tensor]:
        """Per group, (channels,) mean |Σ g·w| per batch since ``reset()``."""
        return {k: (s / max(1, self._batches[k])).float() for k, s in self._sum.items()}

    def reset(self) -> None:
        for k in self._sum:
            self._sum[k].zero_()
            self._batches[k] = 0

    def mask(self, keep: Mapping[str, Sequence[int]]) -> None:
        """Open exactly the channels ``keep`` names per group; mask the others."""
        with torch.no_grad():
            for name, kept in keep.items():
                m = self.masks[name]
                m.fill_(-1.0)
                m[torch.as_tensor(list(kept), dtype=torch.long, device=m.device)] = 1.0


def kept_value(
    space: WidthSpace, importance: Mapping[str, Tensor], keep: Mapping[str, Sequence[int]]
) -> dict[str, dict[int, float]]:
    """Per group and allowed width up to its kept channels, the importance its best ``width`` kept
    channels hold: what ``greedy_path`` trades against milliseconds."""
    out: dict[str, dict[int, float]] = {}
    for g in space.groups:
        kept = torch.as_tensor(list(keep[g.name]), dtype=torch.long)
        best = torch.sort(importance[g.name].double()[kept], descending=True).values.cumsum(0)
        out[g.name] = {w: float(best[w - 1]) for w in space.choices(g) if w <= len(kept)}
    return out


def top_channels(importance: Tensor, kept: Sequence[int], width: int) -> list[int]:
    """The ``width`` most important of the ``kept`` channels (ties: the lower index), ascending."""
    order = sorted(kept, key=lambda c: (-float(importance[c]), c))
    return sorted(order[:width])


@dataclass(frozen=True)
class HalpStep:
    """One pruning step: after how many batches, its latency target, the widths the knapsack chose and
    their prediction, the importance it chose by and over how many batches (those since the last step),
    and per group the channels it masked."""

    batch: int
    target_ms: float
    widths: Widths
    predicted_ms: float
    importance: dict[str, Tensor]
    averaged: int
    removed: dict[str, list[int]]


@dataclass
class HalpResult:
    """The fine-tuned network (ungated, pruned channels zeroed), the channels each group keeps, the
    importance collected after the last step (the last step's own when no batch followed it), and the
    steps."""

    module: nn.Module
    keep: dict[str, list[int]]
    importance: dict[str, Tensor]
    steps: list[HalpStep] = field(default_factory=list)

    def scores(self) -> dict[str, Tensor]:
        """Channel scores whose highest ``len(keep[g])`` per group are exactly the kept channels: 2 plus a
        tie-break in [0, 1) for kept channels, the tie-break alone for pruned ones. The tie-break ranks by
        the last importance, so a narrower network pruned from these keeps the most important."""
        out = {}
        for name, kept in self.keep.items():
            s = self.importance[name].detach().double().cpu()
            tie = torch.argsort(torch.argsort(s, stable=True), stable=True).double() / len(s)  # ranks
            out[name] = tie.index_add(0, torch.as_tensor(kept), torch.full((len(kept),), 2.0, dtype=s.dtype))
        return out


class _Progressive:
    """One progressive prune: the steps still to take (placed at the first batch, when the number of
    batches is known) and, at each, the knapsack's widths on the importance averaged since the last."""

    def __init__(
        self, masked: TaylorMasks, space: WidthSpace, predict_ms: Callable[[Widths], float], *,
        budget_ms: float, settings: HalpSettings,
    ) -> None:  # fmt: skip
        self.masked, self.space, self.predict_ms = masked, space, predict_ms
        self.budget_ms, self.settings = budget_ms, settings
        self.keep = {g.name: list(range(g.channels)) for g in space.groups}
        self.widths = space.dense()
        self.dense_ms = float(predict_ms(self.widths))
        self.steps: list[HalpStep] = []
        self.plan: list[tuple[int, float]] | None = None  # (batches trained, latency target) still to take

    def on_step(self, done: int, total: int) -> None:
        if self.plan is None:  # the first batch: now the number of batches is known
            at = step_batches(total, self.settings)
            self.plan = list(zip(at, latency_targets(self.dense_ms, self.budget_ms, len(at)), strict=True))
        if self.plan and done == self.plan[0][0]:
            self.prune(*self.plan.pop(0))

    def prune(self, batch: int, target_ms: float) -> None:
        space, keep, masked = self.space, self.keep, self.masked
        importance, averaged = masked.importance(), masked.batches()
        masked.reset()
        value = kept_value(space, importance, keep)
        self.widths, predicted = greedy_path(
            space, value, self.predict_ms, stop_ms=target_ms, start=self.widths
        )[-1]
        removed = {}
        for g in space.groups:
            kept = top_channels(importance[g.name], keep[g.name], self.widths[g.name])
            removed[g.name] = sorted(set(keep[g.name]) - set(kept))
            keep[g.name] = kept
        masked.mask(keep)
        self.steps.append(
            HalpStep(batch, target_ms, dict(self.widths), float(predicted), importance, averaged, removed)
        )


def halp_prune(
    net: nn.Module,
    example: Tensor,
    space: WidthSpace,
    dataset: Dataset,
    *,
    predict_ms: Callable[[Widths], float],
    budget_ms: float,
    epochs: float,
    lr: float,
    seed: int = 0,
    settings: HalpSettings | None = None,
    augment: bool = False,
) -> HalpResult:
    """Fine-tune ``net`` (in place) for ``epochs`` on ``dataset``, pruning it progressively from the
    dense widths of ``space`` to widths predicted within ``budget_ms`` (see the module's docstring)."""
    settings = settings or HalpSettings()
    if not epochs > 0:
        raise ConfigError(f"halp prunes during the fine-tune: --finetune-epochs must be > 0, got {epochs}")
    masked = TaylorMasks(net, example, space.groups)
    run = _Progressive(masked, space, predict_ms, budget_ms=budget_ms, settings=settings)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        training.train(
            masked,
            dataset,
            epochs=epochs,
            lr=lr,
            seed=seed,
            parameters=net.parameters(),
            on_step=run.on_step,
            augment=augment,
        )
    if run.plan or not run.steps:
        left = len(run.plan or ())
        raise RuntimeError(f"halp: {left} pruning steps were not reached; the training ended early")
    importance = masked.importance() if masked.batches() else run.steps[-1].importance
    masked.gated.remove()
    _zero_pruned(masked.gated, run.keep)
    return HalpResult(net.eval(), run.keep, importance, run.steps)


def _zero_pruned(gated: GatedNetwork, keep: Mapping[str, Sequence[int]]) -> None:
    """Zero every parameter and buffer the pruned channels hold in their groups' layers (a norm
    layer's running variance is reset to 1, as a new one's)."""
    zeros = copy.deepcopy(gated.net)
    with torch.no_grad():
        for t in [*zeros.parameters(), *zeros.buffers()]:
            t.zero_()
        for m in zeros.modules():
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.running_var is not None:
                m.running_var.fill_(1.0)
    pruned = {g.name: sorted(set(range(g.channels)) - set(keep[g.name])) for g in gated.groups}
    gated.restore(zeros, pruned)
