"""Which sub-networks a profile measures: a deterministic plan, so a rerun continues the same one."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autoprune.config import SamplingConfig
from autoprune.graph import ChannelGroup, Widths, dense_widths, narrowest_widths, round_width


def widths_key(widths: Widths, groups: Sequence[ChannelGroup]) -> tuple[int, ...]:
    return tuple(int(widths[g.name]) for g in groups)


def plan_samples(groups: Sequence[ChannelGroup], config: SamplingConfig) -> list[tuple[str, Widths]]:
    """Up to ``config.samples`` distinct (kind, widths): the dense and the narrowest network first,
    then random networks. Independent per-group ratios ("uniform") concentrate the total latency near
    the middle of its range, so every other sample draws a global ratio first and varies each group
    within +-0.25 of it ("global"), which covers the fast and slow ends as well."""
    rounding = {"round_to": config.round_to, "min_channels": config.round_min_channels}
    plan = [
        ("dense", dense_widths(groups)),
        ("narrowest", narrowest_widths(groups, min_ratio=config.min_ratio, **rounding)),
    ]
    seen = {widths_key(w, groups) for _, w in plan}
    rng = np.random.default_rng(config.seed)
    lo = config.min_ratio
    attempts = 0
    while len(plan) < config.samples and attempts < 50 * config.samples:
        attempts += 1
        if len(plan) % 2:
            kind, ratios = "uniform", rng.uniform(lo, 1.0, len(groups))
        else:
            center = rng.uniform(lo, 1.0)
            kind, ratios = "global", rng.uniform(max(lo, center - 0.25), min(1.0, center + 0.25), len(groups))
        widths = {
            g.name: round_width(g.channels * r, g.channels, **rounding)
            for g, r in zip(groups, ratios, strict=True)
        }
        key = widths_key(widths, groups)
        if key not in seen:
            seen.add(key)
            plan.append((kind, widths))
    return plan
