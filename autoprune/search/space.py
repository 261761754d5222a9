"""The search space: one width per channel group, on the grid the profile was sampled on.

The grid (:func:`autoprune.graph.allowed_widths`) is not arithmetic (a 20-channel group takes 8, 16, 20),
so the Optuna parameter of a group is the *index* of its width in that list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import optuna

from autoprune.errors import ConfigError
from autoprune.graph import ChannelGroup, Widths, allowed_widths

PARAM_PREFIX = "w:"


@dataclass(frozen=True)
class WidthSpace:
    """Each group keeps between ``min_ratio`` of its channels and all of them, on the rounding grid of
    ``round_to`` / ``round_min_channels`` that the profile's sampler and lookup table use."""

    groups: tuple[ChannelGroup, ...]
    min_ratio: float
    round_to: int = 8
    round_min_channels: int = 16

    def choices(self, group: ChannelGroup) -> list[int]:
        """The widths ``group`` may take, ascending; the last is its dense width."""
        return allowed_widths(
            group.channels,
            min_ratio=self.min_ratio,
            round_to=self.round_to,
            round_min_channels=self.round_min_channels,
        )

    def suggest(self, trial: optuna.Trial) -> Widths:
        """Each group's width, suggested as an index into its choices."""
        widths = {}
        for g in self.groups:
            c = self.choices(g)
            widths[g.name] = c[trial.suggest_int(PARAM_PREFIX + g.name, 0, len(c) - 1)]
        return widths

    def widths(self, params: Mapping[str, int]) -> Widths:
        """The widths of Optuna parameters (choice indices), e.g. a trial's ``params``."""
        out = {}
        for g in self.groups:
            c, index = self.choices(g), params.get(PARAM_PREFIX + g.name)
            if index is None or not 0 <= int(index) < len(c):
                raise ConfigError(
                    f"parameter {PARAM_PREFIX}{g.name}={index} is not an index into the group's "
                    f"{len(c)} widths (a study of another space): pass --study NEW_NAME"
                )
            out[g.name] = c[int(index)]
        return out

    def params(self, widths: Mapping[str, int]) -> dict[str, int]:
        """The Optuna parameters (choice indices) of ``widths``, e.g. to enqueue a trial."""
        out = {}
        for g in self.groups:
            c, width = self.choices(g), widths.get(g.name)
            if width is None or int(width) not in c:
                raise ConfigError(
                    f"width {width} of group '{g.name}' is not on the search grid {c}: use one of those"
                )
            out[PARAM_PREFIX + g.name] = c.index(int(width))
        return out

    def contains(self, widths: Mapping[str, int]) -> bool:
        """Whether ``widths`` names every group, each at an allowed width."""
        return all(g.name in widths and int(widths[g.name]) in self.choices(g) for g in self.groups)

    def dense(self) -> Widths:
        """Every group at all its channels (the last choice)."""
        return {g.name: self.choices(g)[-1] for g in self.groups}

    def narrowest(self) -> Widths:
        """Every group at its first choice: the smallest network of the space."""
        return {g.name: self.choices(g)[0] for g in self.groups}

    def snap(self, kept: Mapping[str, float]) -> Widths:
        """Each group at the largest choice <= ``kept[group]`` channels (a real number), at least the
        smallest: any allocation onto the grid, rounding down."""
        out = {}
        for g in self.groups:
            c = self.choices(g)
            fits = [w for w in c if w <= kept[g.name] + 1e-9]
            out[g.name] = fits[-1] if fits else c[0]
        return out

    def uniform(self, ratio: float, of: Mapping[str, int] | None = None) -> Widths:
        """Every group at the largest choice <= ``ratio`` of its channels, or of its width in ``of`` (a
        network scaled down alike in every group), at least the smallest."""
        return self.snap({g.name: ratio * (g.channels if of is None else of[g.name]) for g in self.groups})

    def widest_uniform_within(
        self, budget_ms: float, predict_ms: Callable[[Widths], float], of: Mapping[str, int] | None = None
    ) -> Widths:
        """Bisection on a uniform keep ratio (of ``of``'s widths, default the dense ones): the widest such
        network predicted within budget."""
        lo, hi = (self.min_ratio, 1.0) if of is None else (0.0, 1.0)
        for _ in range(20):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if predict_ms(self.uniform(mid, of)) <= budget_ms else (lo, mid)
        return self.uniform(lo, of)


def space_for(groups: Sequence[ChannelGroup], sampling: Mapping[str, float]) -> WidthSpace:
    """The space matching a profile's sampling settings, so the predictor is never asked to extrapolate."""
    return WidthSpace(
        tuple(groups),
        min_ratio=float(sampling["min_ratio"]),
        round_to=int(sampling["round_to"]),
        round_min_channels=int(sampling["round_min_channels"]),
    )
