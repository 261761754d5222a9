"""Allocating widths by importance per millisecond: the helpers shared by ``knapsack``, ``halp``,
``droppruning`` and the W-Gates trainer.

``kept_importance`` turns a criterion's channel scores into the importance each allowed width keeps;
``greedy_path`` walks down from a network one grid step of one group at a time, taking the step that
loses the least importance per millisecond the predictor says it saves; ``ladder`` picks from that path
the widest network within a budget and narrower fallbacks under it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from autoprune.graph import Widths
from autoprune.search.space import WidthSpace

_EPS_MS = 1e-9


def kept_importance(space: WidthSpace, scores: Mapping[str, Tensor]) -> dict[str, dict[int, float]]:
    """Per group and allowed width, the importance kept: the sum of its best ``width`` channels' scores
    over the group's mean score (a group of uniform scores keeps exactly ``width``)."""
    out: dict[str, dict[int, float]] = {}
    for g in space.groups:
        s = scores[g.name].detach().double().abs()
        mean = float(s.mean())
        s = s / mean if mean > 0 else torch.ones_like(s)
        best = torch.sort(s, descending=True).values.cumsum(0)
        out[g.name] = {w: float(best[w - 1]) for w in space.choices(g)}
    return out


def greedy_path(
    space: WidthSpace, value: Mapping[str, Mapping[int, float]], predict_ms: Callable[[Widths], float], *,
    stop_ms: float, start: Widths | None = None,
) -> list[tuple[Widths, float]]:  # fmt: skip
    """Networks from ``start`` (default the dense one) down, one grid step of one group at a time, until
    predicted <= ``stop_ms`` (or nothing is left to remove); each with its predicted latency."""
    current = dict(space.dense() if start is None else start)
    now = float(predict_ms(current))
    path = [(current, now)]
    while now > stop_ms:
        best: tuple[float, Widths, float] | None = None
        for g in space.groups:
            choices = space.choices(g)
            i = choices.index(current[g.name])
            if i == 0:
                continue
            step = {**current, g.name: choices[i - 1]}
            after = float(predict_ms(step))
            lost = value[g.name][current[g.name]] - value[g.name][choices[i - 1]]
            ratio = lost / max(now - after, _EPS_MS)
            if best is None or ratio < best[0]:
                best = (ratio, step, after)
        if best is None:
            break
        _, current, now = best
        path.append((current, now))
    return path


def ladder(
    space: WidthSpace, value: Mapping[str, Mapping[int, float]], predict_ms: Callable[[Widths], float], *,
    budget_ms: float, start: Widths | None = None, fallbacks: int = 8, step: float = 0.03,
) -> list[tuple[Widths, float]]:  # fmt: skip
    """Along ``greedy_path`` from ``start``: the widest network predicted within the budget, then one
    under each level ``step`` further below it (``fallbacks`` of them), distinct, with predictions."""
    levels = [budget_ms * (1 - step * k) for k in range(fallbacks + 1)]
    path = greedy_path(space, value, predict_ms, stop_ms=levels[-1], start=start)
    out: list[tuple[Widths, float]] = []
    for level in levels:
        hit = next(((w, ms) for w, ms in path if ms <= level), None)
        if hit is not None and all(w != hit[0] for w, _ in out):
            out.append(hit)
    return out


def scaled_down(
    space: WidthSpace, widths: Widths, predict_ms: Callable[[Widths], float], *, budget_ms: float,
    fallbacks: int, step: float = 0.03,
) -> list[tuple[Widths, float]]:  # fmt: skip
    """Narrower networks of ``widths``' shape: for each level ``step`` further below the budget
    (``fallbacks`` of them), the widest uniform scaling of it predicted within the level; distinct, other
    than ``widths``, with predictions. What a strategy's ranking ends in, so that a network fits even
    when its winner measures over the budget."""
    out: list[tuple[Widths, float]] = []
    for k in range(1, fallbacks + 1):
        w = space.widest_uniform_within(budget_ms * (1 - step * k), predict_ms, of=widths)
        if w != widths and all(w != seen for seen, _ in out):
            out.append((w, float(predict_ms(w))))
    return out


def gate_widths(
    space: WidthSpace,
    scores: Mapping[str, Tensor],
    counts: Mapping[str, int],
    *,
    predict_ms: Callable[[Widths], float],
    budget_ms: float,
) -> Widths:
    """The gates' network on the grid: each group's open-channel count rounded to its nearest allowed
    width; then, greedily by gate probability per ms (``gate_value``), stepped down the grid while it is
    predicted over the budget, or up while a step still fits: rounding a coarse grid can land far from
    the budget either way."""
    widths = {}
    for g in space.groups:
        choices = space.choices(g)
        widths[g.name] = min(choices, key=lambda w: (abs(w - counts[g.name]), w))
    value = gate_value(space, scores)
    widths, now = greedy_path(space, value, predict_ms, stop_ms=budget_ms, start=widths)[-1]
    while now <= budget_ms:
        best: tuple[float, Widths, float] | None = None
        for g in space.groups:
            choices = space.choices(g)
            i = choices.index(widths[g.name])
            if i + 1 == len(choices):
                continue
            step = {**widths, g.name: choices[i + 1]}
            after = float(predict_ms(step))
            if after > budget_ms:
                continue
            gain = (value[g.name][choices[i + 1]] - value[g.name][choices[i]]) / max(after - now, 1e-9)
            if best is None or gain > best[0]:
                best = (gain, step, after)
        if best is None:
            break
        _, widths, now = best
    return widths


def gate_value(space: WidthSpace, scores: Mapping[str, Tensor]) -> dict[str, dict[int, float]]:
    """Per group and allowed width, the gate probability (sigmoid of the score) its channels keep: what
    a step down the grid loses (``kept_importance``)."""
    return kept_importance(space, {k: torch.sigmoid(v) for k, v in scores.items()})
