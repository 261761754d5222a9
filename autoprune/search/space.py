"""The search space: one integer width per channel group, on the profile's rounding grid."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import optuna

from autoprune.graph import ChannelGroup, Widths, round_width

PARAM_PREFIX = "w:"


@dataclass(frozen=True)
class WidthSpace:
    """Each group keeps between ``min_ratio`` of its channels and all of them. Groups of at least
    ``round_min_channels`` move in steps of ``round_to`` (the grid the profile was sampled on), ending
    at the dense width so the unpruned group is always a choice."""

    groups: tuple[ChannelGroup, ...]
    min_ratio: float
    round_to: int = 8
    round_min_channels: int = 16

    def choices(self, group: ChannelGroup) -> range:
        ch = group.channels
        if ch >= self.round_min_channels and self.round_to > 1:
            step = self.round_to
            low = round_width(ch * self.min_ratio, ch, round_to=step, min_channels=self.round_min_channels)
            low += (ch - low) % step  # align to the dense end
            return range(low, ch + 1, step)
        return range(max(1, round(ch * self.min_ratio)), ch + 1)

    def suggest(self, trial: optuna.Trial) -> Widths:
        widths = {}
        for g in self.groups:
            c = self.choices(g)
            widths[g.name] = trial.suggest_int(PARAM_PREFIX + g.name, c.start, c.stop - 1, step=c.step)
        return widths

    def widths(self, params: dict[str, int]) -> Widths:
        return {g.name: int(params[PARAM_PREFIX + g.name]) for g in self.groups}

    def params(self, widths: Widths) -> dict[str, int]:
        return {PARAM_PREFIX + name: int(w) for name, w in widths.items()}

    def narrowest(self) -> Widths:
        return {g.name: self.choices(g).start for g in self.groups}

    def uniform(self, ratio: float) -> Widths:
        """Every group at the largest choice <= ``ratio`` of its channels (at least the smallest)."""
        out = {}
        for g in self.groups:
            c = self.choices(g)
            fits = [w for w in c if w <= ratio * g.channels]
            out[g.name] = fits[-1] if fits else c.start
        return out

    def widest_uniform_within(self, budget_ms: float, predict_ms: Callable[[Widths], float]) -> Widths:
        """Bisection on a uniform keep ratio: the widest uniform network predicted within budget."""
        lo, hi = self.min_ratio, 1.0
        for _ in range(20):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if predict_ms(self.uniform(mid)) <= budget_ms else (lo, mid)
        return self.uniform(lo)


def space_for(groups: Sequence[ChannelGroup], sampling: dict[str, float]) -> WidthSpace:
    """The space matching a profile's sampling settings, so the predictor is never asked to extrapolate."""
    return WidthSpace(
        tuple(groups),
        min_ratio=float(sampling["min_ratio"]),
        round_to=int(sampling["round_to"]),
        round_min_channels=int(sampling["round_min_channels"]),
    )
