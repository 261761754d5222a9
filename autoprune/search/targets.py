"""Several latency budgets on one network (``--target PREDICTOR:BUDGET``, repeated): one per device, batch
size or runtime the network ships to. Its one owner.

Every strategy, projection and ladder already honours one predicted latency under one budget, so several
targets are given to them as one: the *binding* latency, ``budget_0 * max_i(latency_i / budget_i)``, in
the first target's milliseconds. A network meets it exactly when it meets every target's budget; it is
differentiable wherever each target's predictor is (the gates), and Optuna is given one constraint per
target (``SearchProblem.constrain``).

Finalists are timed on every target this machine can time, each judged as one budget's finalists are:
by its own margin (the protocol's tolerance, or the network's spread over repeats if larger). A target
whose device is not here (another machine's profile) is judged on its predictor's calibrated upper
bound, reported as predicted only. The judgement is handed on as one timing in the first target's frame
whose margin rule gives the same verdict, so ``select_by_measurement`` and every strategy that measures
judge several targets as they judge one; ``Targets.readings`` keeps each target's own numbers for the
report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from autoprune.graph import Widths
from autoprune.latency import Timing
from autoprune.search.budget import margin_for
from autoprune.search.strategies._base import SearchProblem

Timer = Callable[[list[Widths]], list[Timing]]


@dataclass(frozen=True)
class Target:
    """One budget as the search sees it: latencies in this target's conditions now (ms), ``measure`` its
    device's judged timings (None: the device is not this machine's, judged on ``predict_many``, which is
    then the predictor's upper bound, ``bound`` says which)."""

    name: str
    budget_ms: float
    predict_many: Callable[[list[Widths]], Sequence[float]]
    measure: Timer | None = None
    latency: Callable[[Tensor], Tensor] | None = None  # kept fractions -> ms, differentiable
    tolerance: float = 0.0  # the least margin a measurement needs
    bound: str = "prediction"  # what predict_many gives: "prediction" or "upper bound at 0.9"
    info: Mapping[str, Any] | None = None  # for the report: predictor, backend, batch, device


@dataclass(frozen=True)
class Reading:
    """One network on one target: what the report and ``search.json`` show."""

    target: str
    budget_ms: float
    predicted_ms: float
    measured_ms: float | None  # None: predicted only (the device is not here)
    margin: float  # the fraction its latency had to stay under the budget by

    @property
    def need(self) -> float:
        """Its latency with its margin over the budget: <= 1 meets it."""
        ms = self.predicted_ms if self.measured_ms is None else self.measured_ms
        return ms * (1.0 + self.margin) / self.budget_ms

    @property
    def within_budget(self) -> bool:
        return self.need <= 1.0


class Targets:
    """The targets of one search, the first one the search runs on (its frame, its study's budget)."""

    def __init__(self, targets: Sequence[Target]) -> None:
        if not targets:
            raise ValueError("a search has at least one target")
        names = [t.name for t in targets]
        if len(set(names)) != len(names):
            raise ValueError(f"target names must differ: {names}")
        self.all = list(targets)
        self._readings: dict[tuple[tuple[str, int], ...], list[Reading]] = {}

    @property
    def primary(self) -> Target:
        return self.all[0]

    @property
    def several(self) -> bool:
        return len(self.all) > 1

    @property
    def budget_ms(self) -> float:
        return self.primary.budget_ms

    def budgets(self) -> dict[str, float]:
        return {t.name: t.budget_ms for t in self.all}

    # -- prediction --------------------------------------------------------------------------------
    def predict_many(self, widths: list[Widths]) -> list[float]:
        """The binding latency of each network: ``budget_0 * max_i(latency_i / budget_i)``."""
        per = [[float(v) for v in t.predict_many(widths)] for t in self.all]
        if not self.several:
            return per[0]
        b0 = self.budget_ms
        return [
            b0 * max(p[k] / t.budget_ms for p, t in zip(per, self.all, strict=True))
            for k in range(len(widths))
        ]

    def predict_ms(self, widths: Widths) -> float:
        return self.predict_many([widths])[0]

    def excess(self, widths: Widths) -> dict[str, float]:
        """Each target's predicted latency minus its budget (ms; <= 0 holds), by target."""
        return {t.name: float(t.predict_many([widths])[0]) - t.budget_ms for t in self.all}

    @property
    def differentiable(self) -> bool:
        return all(t.latency is not None for t in self.all)

    def latency(self, fractions: Tensor) -> Tensor:
        """The binding latency of kept fractions, differentiable (where ``differentiable``)."""
        if not self.differentiable:
            raise ValueError("a target's latency predictor is not differentiable")
        if not self.several:
            return self.primary.latency(fractions)  # type: ignore[misc]
        shares = torch.stack([t.latency(fractions) / t.budget_ms for t in self.all])  # type: ignore[misc]
        return self.budget_ms * shares.max(dim=0).values

    def apply(self, problem: SearchProblem) -> SearchProblem:
        """``problem`` (the first target's) searching under every target: the binding latency and its
        budget, one constraint per target, and every target's measurement."""
        if not self.several:
            return problem
        network = problem.network
        if network is not None:
            network = replace(network, latency=self.latency if self.differentiable else None)
        return replace(
            problem, budget_ms=self.budget_ms, predict_ms=self.predict_ms, predict_many=self.predict_many,
            measure=self.timer(), excess=self.excess, budgets=self.budgets(), network=network,
        )  # fmt: skip

    # -- measurement -------------------------------------------------------------------------------
    def timer(self, wrap: Callable[[Target], Timer] | None = None) -> Timer:
        """The judged timings of networks on every target, as one timing each (see the module's note);
        ``wrap(target)`` gives the timer to use for a target that is here (default its ``measure``: a
        caller wraps it to keep its timings, ``resume.measured_once``)."""

        def measure(widths_list: list[Widths]) -> list[Timing]:
            per: list[list[Timing] | None] = []
            for t in self.all:
                timer = None if t.measure is None else (wrap(t) if wrap is not None else t.measure)
                per.append(None if timer is None else timer(widths_list))
            if per[0] is None:
                raise ValueError(f"the first target ({self.primary.name}) must be timed on this machine")
            if not self.several:
                return per[0]
            return [
                self._combine(w, [None if p is None else p[k] for p in per])
                for k, w in enumerate(widths_list)
            ]

        return measure

    def _combine(self, widths: Widths, timings: Sequence[Timing | None]) -> Timing:
        readings = []
        for t, timing in zip(self.all, timings, strict=True):
            predicted = float(t.predict_many([widths])[0])
            if timing is None:
                ms, margin = None, 0.0  # an upper bound: no noise margin on top of it
            else:
                ms, margin = timing.median_ms, margin_for(timing.spread, tolerance=t.tolerance)
            readings.append(Reading(t.name, t.budget_ms, predicted, ms, margin))
        self._readings[_key(widths)] = readings
        binding = max(readings, key=lambda r: r.need)
        first = timings[0]
        assert first is not None
        # One timing in the first target's frame: the binding target's latency scaled to it, with the
        # binding target's margin; where that margin is below the first target's floor, the latency is
        # scaled down by the difference, so the floor's rule gives the binding target's verdict.
        floor = self.primary.tolerance
        ms = binding.predicted_ms if binding.measured_ms is None else binding.measured_ms
        share = ms / binding.budget_ms
        if binding.margin >= floor:
            return replace(first, median_ms=self.budget_ms * share, spread=1.0 + binding.margin)
        return replace(
            first, median_ms=self.budget_ms * share * (1 + binding.margin) / (1 + floor), spread=1.0
        )

    def readings(self, widths: Widths) -> list[Reading] | None:
        """Each target's numbers for a network this search measured (None: not measured here)."""
        return self._readings.get(_key(widths))

    def report(self, widths: Widths) -> list[dict[str, Any]]:
        """Per target: budget, prediction, measurement (or predicted only) and margin, for ``search.json``."""
        readings = self.readings(widths) or []
        by = {r.target: r for r in readings}
        rows = []
        for t in self.all:
            r = by.get(t.name)
            predicted = float(t.predict_many([widths])[0])
            rows.append(
                {
                    "target": t.name,
                    **dict(t.info or {}),
                    "budget_ms": t.budget_ms,
                    "predicted_ms": predicted,
                    "judged_on": "measurement" if t.measure is not None else f"predicted only: {t.bound}",
                    "measured_ms": None if r is None else r.measured_ms,
                    "margin": None if r is None else r.margin,
                    "slack": None if r is None else 1.0 - r.need,  # the budget's share left unused
                    "within_budget": None if r is None else r.within_budget,
                }
            )
        return rows


def _key(widths: Widths) -> tuple[tuple[str, int], ...]:
    return tuple(sorted((k, int(v)) for k, v in widths.items()))
