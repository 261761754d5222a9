"""``pfp``: provable filter pruning's allocation (Liebenwein, Baykal et al., ICLR 2020). No per-group
ratio is searched: an error tolerance ε (and failure probability δ) gives each group, through its PFP
sensitivities, the number of importance-sampling draws that keeps every next-layer pre-activation within
a factor 1 ± ε with probability 1 - δ; its kept width is the expected number of distinct channels those
draws hit, rounded up to the group's width grid (``autoprune.search.criteria._pfp``). A group whose
sensitivity is concentrated in a few channels is compressed more than one where it is spread out.

ε sets the size of the whole network, so it is bisected to the latency budget by prediction: the
smallest ε (the widest network) whose widths are predicted within the budget. ``--pfp-eps E`` instead
fixes ε (a BudgetError names the fix when its network is predicted over the budget). Fallbacks follow,
as ``knapsack``'s do: the networks of the smallest ε predicted 3 %, 6 %, ... under the budget; like every
strategy's, the candidates are then selected by measurement. Nothing is trained (``evaluates = False``).

The sensitivities are computed here from the dense network (``SearchProblem.network``) on a few seeded
calibration batches of its training split, whatever ``--criterion`` is; which channels the final
network keeps follows the search's criterion: ``--criterion pfp`` keeps them by PFP's importance
sampling. ε, δ, the chosen εs and widths are recorded on the study, so a rerun returns the same
candidates without recomputing anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import optuna

from autoprune.errors import BudgetError, ConfigError
from autoprune.graph import Widths
from autoprune.search.criteria._pfp import GroupSensitivity, pfp_statistics, pfp_widths
from autoprune.search.strategies._base import (
    Fallbacks,
    SearchProblem,
    SearchStrategy,
    StrategyOption,
    register_strategy,
)
from autoprune.search.study import Candidate
from autoprune.training import calibration_batches

_ATTR = "pfp"  # study user attribute: settings, chosen εs, widths and predictions
EPS_RANGE = (1e-3, 1e9)  # bisection bounds of ε: below, every group is dense; above, every draw count is 1
_BISECT_STEPS = 60


def bisect_eps(
    widths_of: Callable[[float], Widths], predict_ms: Callable[[Widths], float], level_ms: float
) -> float:
    """The smallest ε in ``EPS_RANGE`` whose widths are predicted within ``level_ms`` (widths narrow as ε
    grows), by bisection on log ε; the range's top when none is."""
    lo, hi = EPS_RANGE
    if predict_ms(widths_of(lo)) <= level_ms:
        return lo
    for _ in range(_BISECT_STEPS):  # lo is over the level, hi within (or the top)
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if predict_ms(widths_of(mid)) <= level_ms else (mid, hi)
    return hi


@register_strategy
class PFPStrategy(SearchStrategy):
    name = "pfp"
    trial_means = "unused: one allocation from the error tolerance"
    evaluates = False
    options = (
        StrategyOption(
            "--pfp-eps", "eps", float,
            "pfp: the relative error tolerance ε that sets every group's width (default: bisected to the "
            "largest network predicted within the budget)",
        ),
        StrategyOption(
            "--pfp-delta", "delta", float, "pfp: the failure probability δ of the bound (default 0.1)"
        ),
        StrategyOption(
            "--pfp-batches", "batches", int,
            "pfp: training batches its sensitivities are computed on (default 4)",
        ),
    )  # fmt: skip

    def __init__(
        self, *, eps: float | None = None, delta: float = 0.1, batches: int = 4, fallbacks: int = 4,
        fallback_step: float = 0.03,
    ) -> None:  # fmt: skip
        if eps is not None and not (eps > 0 and math.isfinite(eps)):
            raise ConfigError(f"--pfp-eps {eps}: the error tolerance must be a positive number, e.g. 0.5")
        if not 0 < delta < 1:
            raise ConfigError(f"--pfp-delta {delta}: the failure probability must be in (0, 1), e.g. 0.1")
        if batches < 1:
            raise ConfigError(f"--pfp-batches {batches}: must be >= 1, e.g. 4")
        self.eps, self.delta, self.batches = eps, delta, batches
        self.fallbacks = Fallbacks(fallbacks, fallback_step)

    def settings(self) -> dict[str, float | int | None]:
        return {"eps_given": self.eps, "delta": self.delta, "batches": self.batches,
                "fallbacks": self.fallbacks.count, "fallback_step": self.fallbacks.step}  # fmt: skip

    def statistics(self, problem: SearchProblem) -> dict[str, GroupSensitivity]:
        """PFP sensitivities of every searched group, from the dense network on calibration batches."""
        net = problem.network
        if net is None:
            raise ConfigError(
                "pfp computes sensitivities from the dense network: give SearchProblem.network "
                "(autoprune.search via the API and CLI does)"
            )
        batches = calibration_batches(net.train, count=self.batches, seed=net.seed)
        stats = pfp_statistics(net.module, net.example, batches)
        missing = [g.name for g in problem.space.groups if g.name not in stats]
        if missing:
            raise ConfigError(f"pfp: the network has no channel groups {missing} of the search space: "
                              "search the network the profile was taken of")  # fmt: skip
        return stats

    def run(
        self,
        problem: SearchProblem,
        *,
        study: optuna.Study,
        trials: int,
        on_trial: Callable[[int, int], None] | None = None,
    ) -> list[Candidate]:
        done = study.user_attrs.get(_ATTR)
        if done is not None and done.get("settings") == self.settings():
            return [Candidate({k: int(v) for k, v in w.items()}, float(ms))
                    for w, ms in zip(done["widths"], done["predicted_ms"], strict=True)]  # fmt: skip
        stats = self.statistics(problem)
        chosen = self.allocate(stats, problem)
        study.set_user_attr(_ATTR, {
            "settings": self.settings(),
            "eps": [e for e, _, _ in chosen],
            "widths": [w for _, w, _ in chosen],
            "predicted_ms": [ms for _, _, ms in chosen],
            "sensitivity_sums": {g.name: stats[g.name].total for g in problem.space.groups},
        })  # fmt: skip
        return [Candidate(w, ms) for _, w, ms in chosen]

    def allocate(
        self, stats: Mapping[str, GroupSensitivity], problem: SearchProblem
    ) -> list[tuple[float, Widths, float]]:
        """(ε, widths, predicted ms) of the chosen network, then of each distinct fallback."""
        choices = {g.name: problem.space.choices(g) for g in problem.space.groups}

        def widths_of(eps: float) -> Widths:
            return pfp_widths(stats, choices, eps=eps, delta=self.delta)

        predict = problem.predict_ms
        narrowest = float(predict(widths_of(EPS_RANGE[1])))
        if narrowest > problem.budget_ms:
            raise BudgetError(
                f"pfp: even its narrowest network is predicted at {narrowest:.4g} ms, over the budget of "
                f"{problem.budget_ms:.4g} ms: raise the budget"
            )
        if self.eps is None:
            eps = bisect_eps(widths_of, predict, problem.budget_ms)
        else:
            eps = self.eps
            ms = float(predict(widths_of(eps)))
            if ms > problem.budget_ms:
                raise BudgetError(
                    f"pfp: --pfp-eps {eps} keeps a network predicted at {ms:.4g} ms, over the budget of "
                    f"{problem.budget_ms:.4g} ms: raise --pfp-eps, or drop it to bisect ε to the budget"
                )
        first = widths_of(eps)
        out = [(eps, first, float(predict(first)))]
        for k in range(1, self.fallbacks.count + 1):
            level = min(problem.budget_ms, out[0][2]) * (1 - self.fallbacks.step * k)
            e = max(eps, bisect_eps(widths_of, predict, level))
            w = widths_of(e)
            ms = float(predict(w))
            if ms <= level and all(w != seen for _, seen, _ in out):
                out.append((e, w, ms))
        return out
