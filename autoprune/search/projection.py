"""Candidates on the budget: any proposed allocation is projected onto the predicted-latency budget.

A network well under the budget wastes capacity, and comparing such a network with one at the budget
says more about the latency left unused than about the allocation (EagleEye discards candidates more
than 0.5 % off the target). So a strategy proposes only the *shape* of an allocation, a relative keep
ratio per group, and ``project_to_budget`` turns it into grid widths that use the budget: the largest
common scale of the shape predicted within the budget, then one grid step at a time for the group
furthest below its share of the next scale, while the prediction stays within the budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from autoprune.graph import Widths
from autoprune.search.space import WidthSpace


@dataclass(frozen=True)
class Projected:
    widths: Widths
    predicted_ms: float
    share: float  # predicted latency over the budget: in [1 - eps, 1] unless the grid is too coarse


def project_to_budget(
    space: WidthSpace,
    shape: Mapping[str, float],
    predict_many: Callable[[list[Widths]], Sequence[float]],
    budget_ms: float,
    *,
    grid: int = 33,
    refinements: int = 2,
) -> Projected:
    """Grid widths in the proportions of ``shape`` (positive relative keep ratios, one per group) that
    use the budget: the largest common scale ``s`` predicted within it (group g keeps
    ``min(1, s * shape[g])`` of its channels, snapped down to the grid; found on a grid of ``grid`` scales,
    refined ``refinements`` times), then a greedy fill: repeatedly widen by one grid step the group whose
    width falls furthest short of its share at the next scale, among the steps predicted within the
    budget, until none is. Predictions are batched (``predict_many``). The narrowest network when
    nothing fits."""
    if not all(shape[g.name] > 0 for g in space.groups):
        raise ValueError(f"a shape's relative keep ratios must be > 0: {dict(shape)}")

    def at(scale: float) -> Widths:
        return space.snap({g.name: min(1.0, scale * shape[g.name]) * g.channels for g in space.groups})

    lo, hi = 0.0, 1.0 / min(shape[g.name] for g in space.groups)  # at hi every group is dense
    for _ in range(refinements + 1):
        scales = [lo + (hi - lo) * i / (grid - 1) for i in range(grid)]
        ms = predict_many([at(s) for s in scales])
        fits = [i for i in range(grid) if ms[i] <= budget_ms]
        i = fits[-1] if fits else 0  # none: not even the narrowest fits (the caller's budget check says so)
        widths, now = at(scales[i]), float(ms[i])
        if not fits:
            return Projected(widths, now, now / budget_ms)
        if i == grid - 1:
            lo = hi = scales[i]
            break
        lo, hi = scales[i], scales[i + 1]
    target = {g.name: min(1.0, hi * shape[g.name]) * g.channels for g in space.groups}
    while True:
        steps = []
        for g in space.groups:
            c = space.choices(g)
            i = c.index(widths[g.name])
            if i + 1 < len(c):
                steps.append((g, {**widths, g.name: c[i + 1]}))
        if not steps:
            break
        after = predict_many([w for _, w in steps])
        ok = [(g, w, float(a)) for (g, w), a in zip(steps, after, strict=True) if a <= budget_ms]
        if not ok:
            break
        # the group furthest short of its target, relative to its size
        g, widths, now = max(
            ok, key=lambda s: ((target[s[0].name] - widths[s[0].name]) / s[0].channels, s[0].name)
        )
    return Projected(widths, now, now / budget_ms)


def shape_from_offsets(offsets: Mapping[str, float], *, min_ratio: float) -> dict[str, float]:
    """Relative keep ratios from offsets in [-1, 1]: ``exp(offset * log(1 / min_ratio) / 2)``, so the
    offsets span the grid's whole range of ratios (e.g. 0.5x to 2x of uniform at ``min_ratio`` 0.25)."""
    half = math.log(1.0 / min_ratio) / 2 if min_ratio < 1 else 0.0
    return {k: math.exp(float(v) * half) for k, v in offsets.items()}
