"""Active profiling: measure next the sub-networks the LPNet ensemble disagrees on most.

A candidate's score is the ensemble's (calibrated) std of log-latency; with a latency budget it is
weighted by a Gaussian in log(predicted / budget), so networks predicted near the budget, where the
search will need accurate predictions, come first. :class:`ActiveAcquirer` is the ``acquire`` callback
of :func:`autoprune.latency.profile_model`; :func:`active_curve` replays the choice on an already
measured profile to compare it with random sampling (accuracy on fixed held-out rows against the
number of measured networks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from autoprune.config import SamplingConfig
from autoprune.errors import ConfigError
from autoprune.graph import Widths
from autoprune.latency import Profile, plan_samples
from autoprune.latency.sampler import widths_key
from autoprune.predictor.base import MIN_ROWS, LatencyPredictor, make_predictor
from autoprune.predictor.features import Features
from autoprune.predictor.metrics import latency_metrics

LPNET_DEFAULTS: dict[str, Any] = {"epochs": 600}  # refit every batch: shorter than a final fit
STRATEGIES = ("random", "active")


def acquisition_scores(
    predictor: LatencyPredictor, widths: Sequence[Widths], budget_ms: float | None = None, band: float = 0.15
) -> np.ndarray:
    """Per candidate: the ensemble's std of log-latency, times exp(-0.5 (log(mean_ms / budget_ms) /
    band)^2) when ``budget_ms`` is given."""
    if budget_ms is not None and budget_ms <= 0:
        raise ConfigError(f"--budget-ms must be > 0, got {budget_ms}")
    if band <= 0:
        raise ConfigError(f"the budget band must be > 0, got {band}")
    with torch.no_grad():
        mean_log, std_log = predictor._log_spread(predictor.features(list(widths)))
    if budget_ms is None:
        return np.asarray(std_log, dtype=float)
    return np.asarray(std_log * np.exp(-0.5 * ((mean_log - np.log(budget_ms)) / band) ** 2), dtype=float)


class ActiveAcquirer:
    """``acquire(profile, n)``: fit an LPNet ensemble on the profile's clean rows and return the (at
    most ``min(batch, n)``) candidates of a fresh random pool with the highest acquisition scores."""

    def __init__(
        self,
        features: Features,
        *,
        budget_ms: float | None = None,
        batch: int = 10,
        pool: int = 2000,
        seed: int = 0,
        band: float = 0.15,
        lpnet_options: Mapping[str, Any] | None = None,
    ) -> None:
        if batch < 1 or pool < 1:
            raise ConfigError(f"--active-batch and the candidate pool must be >= 1, got {batch} and {pool}")
        if budget_ms is not None and budget_ms <= 0:
            raise ConfigError(f"--budget-ms must be > 0, got {budget_ms}")
        self.features, self.budget_ms, self.band = features, budget_ms, band
        self.batch, self.pool, self.seed = batch, pool, seed
        self.lpnet_options = {**LPNET_DEFAULTS, "seed": seed, **(lpnet_options or {})}

    def __call__(self, profile: Profile, n: int) -> list[Widths]:
        clean = np.flatnonzero(~profile.noisy())
        if len(clean) < MIN_ROWS:
            raise ConfigError(
                f"active profiling fits on >= {MIN_ROWS} measured networks, '{profile.path}' has "
                f"{len(clean)} usable: pass --active-initial {MIN_ROWS} or more"
            )
        predictor = make_predictor("lpnet", self.features, **self.lpnet_options).fit(profile, clean)
        # The pool's seed follows the profile's size, so a resumed run draws what an unbroken one would.
        candidates = self._candidates(profile, seed=self.seed + len(profile.rows))
        if not candidates:
            return []
        scores = acquisition_scores(predictor, candidates, self.budget_ms, self.band)
        top = np.argsort(-scores, kind="stable")[: min(self.batch, n)]
        return [candidates[i] for i in top]

    def _candidates(self, profile: Profile, *, seed: int) -> list[Widths]:
        """Random networks of the profile's sampling space (no boundary ones), none measured yet."""
        groups = profile.groups
        config = SamplingConfig.from_dict(
            {**profile.meta["sampling"], "samples": self.pool + 2, "seed": seed, "boundary": False}
        )
        measured = {widths_key(w, groups) for w in profile.widths()}
        return [
            w
            for kind, w in plan_samples(groups, config)
            if kind not in ("dense", "narrowest") and widths_key(w, groups) not in measured
        ]


def active_curve(
    profile: Profile,
    features: Features,
    *,
    held_out: Sequence[int] | np.ndarray,
    sizes: Sequence[int],
    strategy: str,
    seed: int = 0,
    budget_ms: float | None = None,
    batch: int = 10,
    lpnet_options: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Held-out accuracy of an LPNet fit on ``n`` measured networks, for each ``n`` in ``sizes``.

    A pool-based simulation on an already measured profile: the ``held_out`` rows are a fixed test set,
    the other clean rows the pool. Both strategies start from the pool's first ``sizes[0]`` rows (the
    plan's order: dense, narrowest, ...) and grow by random picks (``random``) or by the pool rows with
    the highest acquisition scores, refit every ``batch`` picks (``active``). Returns one dict per size:
    ``n`` (networks measured), ``strategy``, ``held_out`` (their count) and the rest of
    :func:`latency_metrics` on the held-out rows.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy '{strategy}': use one of {', '.join(STRATEGIES)}")
    if batch < 1:
        raise ConfigError(f"--active-batch must be >= 1, got {batch}")
    n_rows = len(profile.rows)
    test = np.unique(np.asarray(held_out, dtype=int))
    if len(test) == 0 or test[0] < 0 or test[-1] >= n_rows:
        raise ConfigError(f"held-out rows must be a non-empty subset of the profile's {n_rows} rows")
    held = set(test.tolist())
    pool = [int(i) for i in np.flatnonzero(~profile.noisy()) if i not in held]
    if not sizes or list(sizes) != sorted(set(sizes)) or sizes[0] < MIN_ROWS or sizes[-1] > len(pool):
        raise ConfigError(
            f"sizes must increase from >= {MIN_ROWS} to at most the {len(pool)} pool rows, got {list(sizes)}"
        )
    options = {**LPNET_DEFAULTS, "seed": seed, **(lpnet_options or {})}
    widths, latency = profile.widths(), profile.latency_ms()
    chosen = pool[: sizes[0]]
    rest = [int(i) for i in np.random.default_rng(seed).permutation(pool[sizes[0] :])]

    def fitted() -> LatencyPredictor:
        return make_predictor("lpnet", features, **options).fit(profile, chosen)

    predictor = fitted()
    curve: list[dict[str, Any]] = []
    for size in sizes:
        while len(chosen) < size:
            take = size - len(chosen) if strategy == "random" else min(batch, size - len(chosen))
            if strategy == "active":
                scores = acquisition_scores(predictor, [widths[i] for i in rest], budget_ms)
                picked = {rest[i] for i in np.argsort(-scores, kind="stable")[:take]}
            else:
                picked = set(rest[:take])
            chosen += [i for i in rest if i in picked]
            rest = [i for i in rest if i not in picked]
            predictor = fitted()
        metrics = latency_metrics(predictor.predict([widths[i] for i in test]), latency[test])
        quality = {k: v for k, v in metrics.items() if k != "n"}  # its n is the held-out count
        curve.append({"n": size, "strategy": strategy, "held_out": len(test), **quality})
    return curve


__all__ = ["ActiveAcquirer", "acquisition_scores", "active_curve"]
