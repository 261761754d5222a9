"""Which sub-networks a profile measures: a deterministic plan, so a rerun continues the same one.

The plan starts with the dense and the narrowest network, which pin down the ends of the latency range.
Random networks follow, drawn from a scrambled Sobol sequence, Latin hypercubes or independent uniforms
over the per-group keep ratios, each snapped to the group's nearest allowed width
(:func:`autoprune.graph.allowed_widths`, the grid the search uses too); with ``boundary``, every other
one is instead a boundary network, one group alone at its narrowest width with the others dense (each
group's own effect), until all are in.

Independent per-group ratios concentrate the total latency near the middle of its range (a sum of
independent terms), so every other random network is "global": one coordinate of the point picks a
global ratio and the per-group ratios vary within +-0.25 of it, which covers the fast and slow ends too.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence

import numpy as np

from autoprune.config import SamplingConfig
from autoprune.graph import ChannelGroup, Widths, allowed_widths, dense_widths, snap_width

BATCH = 64  # points drawn per call: a power of two keeps Sobol balanced, a fixed size keeps LHS prefix-stable
GLOBAL_HALF_WIDTH = 0.25


def grid_of(group: ChannelGroup, config: SamplingConfig) -> list[int]:
    """The widths ``group`` may take under ``config``'s rounding (:func:`autoprune.graph.allowed_widths`)."""
    return allowed_widths(
        group.channels,
        min_ratio=config.min_ratio,
        round_to=config.round_to,
        round_min_channels=config.round_min_channels,
    )


def widths_key(widths: Widths, groups: Sequence[ChannelGroup]) -> tuple[int, ...]:
    return tuple(int(widths[g.name]) for g in groups)


def _unit_points(method: str, dims: int, seed: int) -> Iterator[np.ndarray]:
    """An endless deterministic stream of points in [0, 1)^dims."""
    from scipy.stats import qmc

    if method == "uniform":
        rng = np.random.default_rng(seed)
        while True:
            yield from rng.uniform(size=(BATCH, dims))
    engine: qmc.QMCEngine = (
        qmc.Sobol(dims, scramble=True, seed=seed)
        if method == "sobol"
        else qmc.LatinHypercube(dims, seed=seed)
    )
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Sobol warns when dims exceed its table; points stay valid
            yield from engine.random(BATCH)


def boundary_plan(groups: Sequence[ChannelGroup], config: SamplingConfig) -> list[tuple[str, Widths]]:
    """Dense, narrowest and (with ``config.boundary``) each group alone at its narrowest width."""
    dense = dense_widths(groups)
    narrow = {g.name: grid_of(g, config)[0] for g in groups}
    plan = [("dense", dense), ("narrowest", narrow)]
    if config.boundary:
        plan += [("group-min", {**dense, g.name: narrow[g.name]}) for g in groups]
    return plan


def plan_samples(groups: Sequence[ChannelGroup], config: SamplingConfig) -> list[tuple[str, Widths]]:
    """Up to ``config.samples`` distinct (kind, widths), boundary networks first; duplicates (networks
    equal on the width grid) are skipped. A larger ``samples`` extends the same plan."""
    plan: list[tuple[str, Widths]] = []
    seen: set[tuple[int, ...]] = set()

    def add(kind: str, widths: Widths) -> None:
        key = widths_key(widths, groups)
        if key not in seen and len(plan) < config.samples:
            seen.add(key)
            plan.append((kind, widths))

    boundary = boundary_plan(groups, config)
    for kind, widths in boundary[:2]:  # dense and narrowest
        add(kind, widths)
    alone = iter(boundary[2:])
    grids = [grid_of(g, config) for g in groups]
    lo = config.min_ratio
    # Two streams, so each kind's points are a whole low-discrepancy sequence, not every other point of one.
    per_group = _unit_points(config.method, len(groups), config.seed)
    around_global = _unit_points(config.method, len(groups) + 1, config.seed + 1)
    draws = 0
    for attempt in range(50 * config.samples):
        if len(plan) >= config.samples:
            break
        # Random and boundary networks alternate, so a small profile is not all near-dense networks.
        if attempt % 2 == 1 and (boundary_next := next(alone, None)) is not None:
            add(*boundary_next)
            continue
        draws += 1
        if draws % 2:
            kind, ratios = config.method, lo + (1.0 - lo) * next(per_group)
        else:
            u = next(around_global)
            center = lo + (1.0 - lo) * u[0]
            low, high = max(lo, center - GLOBAL_HALF_WIDTH), min(1.0, center + GLOBAL_HALF_WIDTH)
            kind, ratios = "global", low + (high - low) * u[1:]
        snapped = {
            g.name: snap_width(g.channels * r, grid) for g, grid, r in zip(groups, grids, ratios, strict=True)
        }
        add(kind, snapped)
    return plan
