"""Joint training of a network and its gates under the latency loss, and the gates' network on the grid.

loss = task loss + λ_t · (max(0, L̂ − B) + pull · max(0, B − L̂)) / B, where L̂ is the differentiable
predictor's latency of the open channels per group and B the budget. λ_t ramps linearly from 0 to λ over
the first ``warmup`` of the steps, so the gates first learn which filters matter; the small pull from
below keeps the network from shrinking far past the budget. The network's weights train with the usual
SGD (``autoprune.training.train``), the gates with SGD and momentum at their own learning rate, each
gradient tensor clipped alone (Adam's per-parameter scaling would erase how much latency each group
costs: every group would shrink alike). With ``settle`` of the steps left, the gates' network is put on
the grid and fixed, and the remaining steps train its weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from autoprune import training
from autoprune.errors import ConfigError
from autoprune.graph import Widths, keep_top
from autoprune.search.allocation import gate_widths
from autoprune.search.gating import GatedNetwork, LatencyOfFractions, latency_loss
from autoprune.search.space import WidthSpace


@dataclass(frozen=True)
class GateSettings:
    """The knobs of one joint training: the latency loss's weight λ, the gates' learning rate, the least
    fraction of its channels each group keeps, the warm-up fraction of λ, the pull from below, and the
    final fraction of the steps (``settle``) that trains the weights of the network the gates chose, its
    channels fixed."""

    weight: float = 2.0
    gate_lr: float = 0.02
    min_ratio: float = 0.25
    warmup: float = 0.25
    pull: float = 0.1
    settle: float = 0.3
    hidden: int = 16

    def __post_init__(self) -> None:
        if self.weight < 0 or self.gate_lr <= 0 or self.pull < 0 or self.hidden < 1:
            raise ConfigError(f"gate settings out of range: {self}")
        if not (0 <= self.warmup <= 1 and 0 <= self.settle < 1):
            raise ConfigError(f"gate warm-up and settle are fractions of the steps: {self}")
        if not 0 < self.min_ratio <= 1:
            raise ConfigError(f"the gates' minimum ratio must be in (0, 1], got {self.min_ratio}")


@dataclass
class GateResult:
    """A joint training's outcome: the trained network (ungated), the network the gates chose on the
    grid (``widths``, and per group the gate scores whose highest ``widths`` channels it keeps), the
    gates' own open channels per group and their predicted latency when they chose, and the predicted
    latency after each gated step (the trace)."""

    module: nn.Module
    widths: Widths
    scores: dict[str, Tensor]
    counts: dict[str, int]
    latency_ms: float
    trace: list[float] = field(default_factory=list)


class _Joint:
    """One joint training's state: the gated network, the latency loss applied at each step (``penalty``)
    and, once ``1 - settle`` of the steps have run, the gates' network put on the grid (``choose``)."""

    def __init__(
        self, gated: GatedNetwork, space: WidthSpace, *, latency: LatencyOfFractions, budget_ms: float,
        settings: GateSettings,
    ) -> None:  # fmt: skip
        self.gated, self.space, self.latency = gated, space, latency
        self.budget_ms, self.settings = budget_ms, settings
        self.channels = torch.tensor([g.channels for g in space.groups], dtype=torch.float32)
        self.floor = replace(
            space, min_ratio=max(settings.min_ratio, space.min_ratio)
        )  # a sub-grid of space's
        self.trace: list[float] = []
        self.chosen: dict[str, Any] = {}

    def predict_ms(self, widths: Widths) -> float:
        with torch.no_grad():
            return float(self.latency(torch.tensor([widths[g.name] / g.channels for g in self.space.groups])))

    def choose(self) -> None:
        """Put the gates' current network on the grid and fix it."""
        with torch.no_grad():
            scores = {k: v.detach().clone() for k, v in self.gated.scores().items()}
            counts = self.gated.counts()
            landed = float(self.latency(counts / self.channels))
        open_ = {g.name: int(c) for g, c in zip(self.space.groups, counts, strict=True)}
        widths = gate_widths(self.floor, scores, open_, predict_ms=self.predict_ms, budget_ms=self.budget_ms)
        self.gated.fix(keep_top(scores, widths))
        self.chosen.update(widths=widths, scores=scores, counts=open_, latency_ms=landed)

    def penalty(self, step: int, total: int) -> Tensor:
        if self.chosen:
            return torch.zeros(())
        predicted = self.latency(self.gated.counts() / self.channels)
        self.trace.append(float(predicted.detach()))
        settings = self.settings
        if step + 1 >= (1 - settings.settle) * total:
            self.choose()  # from this step's gates; the next steps train the chosen network's weights
        ramp = min(1.0, step / max(1.0, settings.warmup * total)) if settings.warmup > 0 else 1.0
        return latency_loss(predicted, self.budget_ms, weight=settings.weight * ramp, pull=settings.pull)

    def gate_optimizer(self) -> torch.optim.Optimizer:
        """SGD with momentum on the gates, each gradient tensor clipped alone (the gate MLPs' wide inputs
        must not mute the biases)."""
        params = list(self.gated.gates.parameters())
        opt = torch.optim.SGD(params, lr=self.settings.gate_lr, momentum=0.9)

        def clip(*_: object) -> None:
            for p in params:
                nn.utils.clip_grad_norm_(p, 1.0)

        opt.register_step_pre_hook(clip)
        return opt


def train_gates(
    net: nn.Module,
    example: Tensor,
    space: WidthSpace,
    dataset: Dataset,
    *,
    latency: LatencyOfFractions,
    budget_ms: float,
    epochs: float,
    lr: float,
    settings: GateSettings | None = None,
    seed: int = 0,
    start: Widths | None = None,
    augment: bool = False,
) -> GateResult:
    """Train ``net`` (in place) and gates on its channel groups ``space.groups`` jointly; the gates
    open at least ``max(settings.min_ratio, space.min_ratio)`` of each group. After ``1 - settle`` of
    the steps the gates' network is put on the grid (``gate_widths``, never under that minimum ratio)
    and fixed; the remaining steps train its weights alone. The gates start open, or at ``start``'s
    widths on the largest filters: a network inside the profile's region, where the predictor's
    gradients can be trusted more than at the dense corner."""
    settings = settings or GateSettings()
    gated = GatedNetwork(
        net, example, space.groups, min_ratio=max(settings.min_ratio, space.min_ratio),
        hidden=settings.hidden, seed=seed, open_init=start,
    )  # fmt: skip
    joint = _Joint(gated, space, latency=latency, budget_ms=budget_ms, settings=settings)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        training.train(
            gated, dataset, epochs=epochs, lr=lr, seed=seed, parameters=net.parameters(),
            penalty=joint.penalty, optimizers=[joint.gate_optimizer()], augment=augment,
        )  # fmt: skip
    if not joint.chosen:  # no step trained (epochs 0): the gates as initialised
        gated.eval()
        with torch.no_grad():
            gated(example)
        joint.choose()
    gated.remove()
    c = joint.chosen
    return GateResult(net.eval(), c["widths"], c["scores"], c["counts"], c["latency_ms"], joint.trace)
