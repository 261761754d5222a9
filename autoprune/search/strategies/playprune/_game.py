"""Play and Prune (Singh, Verma, Rai, Namboodiri; IJCAI 2019): prune to an accuracy tolerance, not to a
pruning level, alternating pruning steps with fine-tune steps under an adaptive pruning rate.

Our reading of the method (the abstract gives its two modules; the details are choices stated here):

- **AFP** (adaptive filter pruning) minimises the number of filters: each step removes a fraction
  ``rate`` of the channels the last accepted network still keeps. Channels are ranked globally by the
  criterion's importance, normalised per group (divided by the group's mean score, so groups of any
  scale compare), per millisecond the predictor says a channel of its group saves at the current widths
  (a latency-targeted tool prunes where it buys speed); the lowest go first. Each group's new count is
  snapped to the nearest width of its grid (``WidthSpace.choices``) at or below its current one. When
  the rate is too small for any group to move a grid step, or proposes a network already refused from
  this state, the step is the single grid step of one group that costs least (normalised importance
  removed per ms saved) and was not refused yet: the finest move the grid allows.
- **PRC** (pruning-rate controller) maximises accuracy: after each step's fine-tune the validation
  accuracy is compared with the dense network's. Within the tolerance the step is accepted and the rate
  grows (× ``grow``, at most ``max_rate``); otherwise the network and its weights roll back to the last
  accepted ones and the rate shrinks (× ``shrink``, at least ``min_rate``).
- The game ends when no step is left that was not refused from the last accepted network (the rate has
  fallen below what the grid can express and every finest step failed), or at the step limit. The
  result is the last accepted network: the most pruned one within the tolerance.

The paper's AFP also drives the filters chosen for pruning towards zero with a regulariser while it
fine-tunes ("play") before removing them; here they are masked at once and the fine-tune recovers.
Which channels a group keeps never changes (the top ones by the dense network's scores), so the kept
sets are nested and the accepted network is pruned exactly by those scores.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from autoprune.errors import ConfigError
from autoprune.graph import Widths
from autoprune.search.space import WidthSpace


@dataclass(frozen=True)
class RateSettings:
    """The pruning-rate controller: the first step's rate, and how it moves after each step."""

    rate: float = 0.1  # fraction of the kept channels removed by the first step
    grow: float = 1.5  # after an accepted step
    shrink: float = 0.5  # after a refused one
    max_rate: float = 0.5
    min_rate: float = 0.01

    def __post_init__(self) -> None:
        if not 0 < self.min_rate <= self.rate <= self.max_rate < 1:
            raise ConfigError(
                f"playprune: --pp-rate must be in [{self.min_rate}, {self.max_rate}], got {self.rate}"
            )
        if not (self.grow >= 1 and 0 < self.shrink < 1):
            raise ConfigError(f"playprune: need grow >= 1 and 0 < shrink < 1, got {self.grow}, {self.shrink}")


@dataclass(frozen=True)
class GameState:
    """Where the game stands after a step: the last accepted network (``widths``; ``step`` the trial
    that trained it, None: the dense network; ``start`` its saved weights), the rate of the next step,
    the networks refused from ``widths``, and whether the game is over."""

    widths: Widths
    rate: float
    refused: tuple[tuple[int, ...], ...] = ()
    step: int | None = None
    start: str | None = None
    done: bool = False
    history: tuple[float, ...] = ()  # the rate before each step taken

    def to_dict(self) -> dict[str, Any]:
        return {
            "widths": dict(self.widths), "rate": self.rate, "refused": [list(r) for r in self.refused],
            "step": self.step, "start": self.start, "done": self.done, "history": list(self.history),
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GameState:
        return cls(
            {k: int(v) for k, v in d["widths"].items()}, float(d["rate"]),
            tuple(tuple(int(x) for x in r) for r in d["refused"]), d["step"], d["start"], bool(d["done"]),
            tuple(float(r) for r in d.get("history", ())),
        )  # fmt: skip


def controller_update(
    state: GameState,
    proposal: Widths,
    *,
    accepted: bool,
    settings: RateSettings,
    step: int | None = None,
    start: str | None = None,
) -> GameState:
    """PRC: accept ``proposal`` and raise the rate, or refuse it, stay and lower the rate."""
    history = (*state.history, state.rate)
    if accepted:
        rate = min(settings.max_rate, state.rate * settings.grow)
        return GameState(dict(proposal), rate, (), step, start, False, history)
    rate = max(settings.min_rate, state.rate * settings.shrink)
    refused = (*state.refused, tuple(proposal.values()))
    return replace(state, rate=rate, refused=refused, history=history)


class Pruner:
    """AFP: proposes the next network from the last accepted one (see the module's docstring)."""

    def __init__(
        self, space: WidthSpace, scores: Mapping[str, Tensor], predict_ms: Callable[[Widths], float]
    ) -> None:
        self.space, self.predict_ms = space, predict_ms
        # Each group's scores normalised by their mean, ascending: the channels a group drops first.
        self.order = {
            g.name: torch.sort(scores[g.name].detach().float().cpu() / _mean(scores[g.name])).values
            for g in space.groups
        }

    def _ms_per_channel(self, widths: Widths) -> dict[str, float]:
        """Per group not at its narrowest, the predicted ms one channel saves at ``widths``: the step to its
        next lower width, divided by the channels it removes (<= 0 when the predictor sees no saving)."""
        now = self.predict_ms(widths)
        out = {}
        for g in self.space.groups:
            lower = [c for c in self.space.choices(g) if c < widths[g.name]]
            if lower:
                out[g.name] = (now - self.predict_ms({**widths, g.name: lower[-1]})) / (
                    widths[g.name] - lower[-1]
                )
        return out

    def _priority(self, name: str, scores: Tensor, ms: Mapping[str, float]) -> Tensor:
        """Importance per ms saved; a group that saves nothing goes last."""
        per_ms = ms[name]
        return scores / per_ms if per_ms > 0 else torch.full_like(scores, float("inf"))

    def propose(self, state: GameState) -> Widths | None:
        """The next network to try from ``state``, or None when no step is left to try."""
        widths, groups = state.widths, self.space.groups
        ms = self._ms_per_channel(widths)
        if not ms:
            return None  # every group at its narrowest
        removable = []  # (priority, group) of every kept channel above its group's narrowest width
        for g in groups:
            if g.name not in ms:
                continue
            lowest = self.order[g.name][-widths[g.name] :][: widths[g.name] - self.space.choices(g)[0]]
            removable += [(float(p), g.name) for p in self._priority(g.name, lowest, ms)]
        n = max(1, round(state.rate * sum(widths.values())))
        removed: dict[str, int] = {}
        for _p, name in sorted(removable)[:n]:
            removed[name] = removed.get(name, 0) + 1
        proposal = dict(widths)
        for g in groups:
            target = widths[g.name] - removed.get(g.name, 0)
            below = [c for c in self.space.choices(g) if c <= widths[g.name]]
            proposal[g.name] = min(below, key=lambda c: (abs(c - target), -c))
        if proposal != widths and tuple(proposal.values()) not in state.refused:
            return proposal
        return self._finest_step(state, ms)

    def _finest_step(self, state: GameState, ms: Mapping[str, float]) -> Widths | None:
        """One group one grid step down, the cheapest not refused yet (None: all were)."""
        best: tuple[float, Widths] | None = None
        for g in self.space.groups:
            if g.name not in ms:
                continue
            w = state.widths[g.name]
            lower = [c for c in self.space.choices(g) if c < w][-1]
            step = {**state.widths, g.name: lower}
            if tuple(step.values()) in state.refused:
                continue
            dropped = self.order[g.name][-w:][: w - lower]
            cost = float(self._priority(g.name, dropped, ms).sum())
            if best is None or cost < best[0]:
                best = (cost, step)
        return None if best is None else best[1]


def _mean(scores: Tensor) -> float:
    m = float(scores.detach().float().abs().mean())
    return m if m > 0 else 1.0


def within_tolerance(accuracy: float, dense_accuracy: float, max_drop: float) -> bool:
    """``accuracy`` (a fraction) at most ``max_drop`` percentage points below ``dense_accuracy``."""
    return 100.0 * (dense_accuracy - accuracy) <= max_drop + 1e-9
