"""``screen``: many cheap candidates on the budget, ranked by a proxy, then a fine-tuned rerank that
guards against uniform pruning.

1. **Screen.** Each Optuna trial proposes an allocation's shape, one offset per group (TPE with
   ``multivariate=True`` by default), projected onto the budget (``project_to_budget``: every candidate
   uses it), and is scored by the proxy (adaptive BatchNorm, ``SearchProblem.proxy``). ``--trials``
   counts these candidates; the first is the uniform shape. Projections that land on widths already
   scored reuse that score.
2. **Calibrate on the device.** The ``--rerank`` best distinct candidates and the uniform network (the
   widest uniform network *predicted* within the budget) are timed once on the device, interleaved, and
   each is re-projected under its own measured bias (measured over predicted latency) onto
   ``budget / (1 + tolerance)^2``: one tolerance for the finalists' noise margin, one for the noise of
   this timing. A search against a learned predictor selects the shapes the predictor under-predicts (on
   vgg11_bn the winners measured 5-7 % over their prediction while the uniform network measured 9 %
   under, so the rerank compared networks at different real latencies and the winner then measured over
   the budget). After this step the rerank compares networks at the same measured latency; the host's
   drift between this timing and the finalists' can still put the winner over the budget.
3. **Rerank (successive halving).** Those networks get the same short fine-tune (``--finetune-epochs``,
   same seed and data order); the best of them and the uniform network then get a fine-tune
   ``--rerank-growth`` times longer, each with two seeds.
4. **Uniform guard.** The non-uniform network is ranked first only when its mean accuracy beats the
   uniform network's by more than the measured noise: the larger of the seed-to-seed spread of the two
   (the mean of their two seeds' absolute differences) and one standard error of a difference of two
   validation accuracies (``sqrt(2 p (1 - p) / n)``). Otherwise the uniform network is ranked first, and
   the summary says so.

The ranking: the guard's winner, the other finalist, the rest of the rerank by accuracy, then narrower
uniform networks as fallbacks, then the screened candidates not reranked, by proxy. Everything is cached
in the study (trials, every fine-tune's accuracy), so a rerun resumes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import optuna
from scipy.stats import kendalltau

from autoprune.errors import ConfigError
from autoprune.graph import Widths
from autoprune.search.projection import project_to_budget, shape_from_offsets
from autoprune.search.rerank import Finetuned, Guard, uniform_guard
from autoprune.search.rerank import widths_key as _key
from autoprune.search.strategies._base import (
    FALLBACKS,
    Fallbacks,
    SearchProblem,
    SearchStrategy,
    StrategyOption,
    StudySettings,
    register_strategy,
)
from autoprune.search.strategies.uniform import uniform_ladder
from autoprune.search.study import Candidate, finished, train_trials
from autoprune.search.workers import study_lock

OFFSET = "o:"  # trial parameter prefix: a group's offset in [-1, 1]
SAMPLERS = ("tpe", "random", "nsga2", "qmc")
_SUMMARY = "summary"
_CALIBRATED = "screen_calibrated"  # study attribute: the rerank's networks timed and re-projected


def _widest_within(latencies: list[float], limit_ms: float) -> int:
    """The index of the first (widest) network of a widest-first ladder within ``limit_ms``; the last
    (narrowest) when none is."""
    return next((i for i, ms in enumerate(latencies) if ms <= limit_ms), len(latencies) - 1)


@register_strategy
class ScreenStrategy(SearchStrategy):
    name = "screen"
    evaluates = False  # a trial is a proxy score, not a fine-tuned network's accuracy
    default_trials = 300
    trial_means = "candidates on the budget scored by the proxy"
    options = (
        StrategyOption("--rerank", "rerank", int,
                       "screen: candidates fine-tuned beside the uniform network (default 4)"),
        StrategyOption("--rerank-growth", "growth", float,
                       "screen: how many times longer the second fine-tune of the rerank is (default 3)"),
        StrategyOption("--screen-sampler", "sampler", str,
                       f"screen: Optuna sampler of the candidates' shapes: {' | '.join(SAMPLERS)} "
                       "(default tpe, multivariate)"),
        FALLBACKS,
    )  # fmt: skip

    def __init__(
        self, *, rerank: int = 4, growth: float = 3.0, sampler: str = "tpe", fallbacks: int = 2
    ) -> None:
        if rerank < 1:
            raise ConfigError(f"--rerank must be >= 1, got {rerank}")
        if growth < 1:
            raise ConfigError(f"--rerank-growth must be >= 1, got {growth}")
        if sampler not in SAMPLERS:
            raise ConfigError(f"--screen-sampler {sampler}: use one of {', '.join(SAMPLERS)}")
        self.rerank, self.growth, self.sampler = rerank, growth, sampler
        self.fallbacks = Fallbacks(fallbacks)

    def study_settings(self, *, seed: int, trials: int) -> StudySettings:
        startup = max(10, min(50, trials // 5))
        samplers: dict[str, Callable[[], optuna.samplers.BaseSampler]] = {
            "tpe": lambda: optuna.samplers.TPESampler(
                seed=seed,
                n_startup_trials=startup,
                multivariate=True,
                group=False,
                warn_independent_sampling=False,
            ),
            "random": lambda: optuna.samplers.RandomSampler(seed=seed),
            "nsga2": lambda: optuna.samplers.NSGAIISampler(
                seed=seed, population_size=max(10, min(50, trials // 6))
            ),
            "qmc": lambda: optuna.samplers.QMCSampler(seed=seed),
        }
        return StudySettings(samplers[self.sampler]())

    def run(
        self,
        problem: SearchProblem,
        *,
        study: optuna.Study,
        trials: int,
        on_trial: Callable[[int, int], None] | None = None,
    ) -> list[Candidate]:
        if problem.proxy is None or problem.finetune is None:
            raise ConfigError(
                "strategy 'screen' scores candidates with a proxy and reranks them by fine-tuning: pass "
                "SearchProblem.proxy and SearchProblem.finetune (autoprune search does)"
            )
        screened = self._screen(problem, study, trials, on_trial)
        with study_lock(study):  # one worker of a shared study reranks; the others read its results
            ladder, best = self._uniform(problem, study)
            ukey = _key(ladder[best])
            top = [w for w, *_ in screened if _key(w) != ukey][: self.rerank]
            top, best = self._calibrate(problem, study, top, ladder, best)
            ranked = self._rerank(problem, study, screened, top, ladder[best])
        # The rerank, then narrower uniform networks, then the screened candidates not reranked (timed only
        # when everything before them measures over the budget: they are uncalibrated, on the predicted
        # budget's edge, so the fallbacks come first).
        fallbacks = [
            Candidate(w, float(problem.predict_ms(w)))
            for w in ladder[best + 1 : best + 1 + self.fallbacks.count]
        ]
        out = ranked + [f for f in fallbacks if all(f.widths != c.widths for c in ranked)]
        seen = {_key(c.widths) for c in out}
        return out + [Candidate(w, ms) for w, ms, _, _ in screened if _key(w) not in seen]

    @staticmethod
    def _uniform(problem: SearchProblem, study: optuna.Study) -> tuple[list[Widths], int]:
        """The uniform network to beat, before calibration: the widest uniform network *predicted* within
        the budget, as the candidates are. ``_calibrate`` then moves it and them onto the same measured
        latency."""
        ladder = uniform_ladder(problem.space)
        return ladder, _widest_within(problem.predict_batch(ladder), problem.budget_ms)

    # ------------------------------------------------------------------ 1. screen

    def _screen(
        self,
        problem: SearchProblem,
        study: optuna.Study,
        trials: int,
        on_trial: Callable[[int, int], None] | None,
    ) -> list[tuple[Widths, float, float, int]]:
        """Every screened candidate: (widths, predicted ms, proxy value, trial), best proxy first."""
        space = problem.space
        proxy = problem.proxy
        assert proxy is not None
        scored: dict[str, float] = {
            t.user_attrs["key"]: float(t.value)
            for t in finished(study)
            if t.value is not None and "key" in t.user_attrs
        }
        with study_lock(study):
            if not study.trials:  # the uniform shape first
                study.enqueue_trial({OFFSET + g.name: 0.0 for g in space.groups})
        spent = [0.0, 0]

        def objective(trial: optuna.Trial) -> float:
            offsets = {g.name: trial.suggest_float(OFFSET + g.name, -1.0, 1.0) for g in space.groups}
            p = project_to_budget(
                space,
                shape_from_offsets(offsets, min_ratio=space.min_ratio),
                problem.predict_batch,
                problem.budget_ms,
            )
            key = _key(p.widths)
            attrs = {"widths": p.widths, "predicted_ms": p.predicted_ms, "budget_share": p.share, "key": key}
            for name, value in {**attrs, "evaluated": True}.items():
                trial.set_user_attr(name, value)
            problem.constrain(trial, p.widths, p.predicted_ms)
            if key not in scored:
                start = time.perf_counter()
                scored[key] = float(proxy(p.widths))
                spent[0] += time.perf_counter() - start
                spent[1] += 1
            else:
                trial.set_user_attr("proxy_reused", True)
            return scored[key]

        train_trials(study, objective, trials=trials, on_trial=on_trial)
        if spent[1]:
            with study_lock(study):
                done = study.user_attrs.get("proxy_timing", [0.0, 0])
                study.set_user_attr("proxy_timing", [done[0] + spent[0], done[1] + spent[1]])
        return _screened(study, problem.budget_ms)

    # ------------------------------------------------------------------ 2. calibrate on the device

    @staticmethod
    def _calibrate(
        problem: SearchProblem, study: optuna.Study, top: list[Widths], ladder: list[Widths], best: int
    ) -> tuple[list[Widths], int]:
        """The rerank's candidates and uniform network timed once on the device, each re-projected onto
        ``budget / (1 + tolerance)^2`` under its own measured bias; returns the corrected candidates
        (distinct, not uniform) and the corrected uniform network's index on ``ladder``. The timings are
        kept in the study, so a rerun re-projects as the first run did."""
        done = study.user_attrs.get(_CALIBRATED)
        if done is None:
            nets = [ladder[best], *top]
            timings = problem.measure(nets)
            target = problem.budget_ms / (1.0 + problem.tolerance) ** 2
            rows: list[dict[str, Any]] = []
            for i, (w, t) in enumerate(zip(nets, timings, strict=True)):
                predicted = float(problem.predict_ms(w))
                bias = t.median_ms / predicted if predicted > 0 else 1.0

                def corrected(many: list[Widths], bias: float = bias) -> list[float]:
                    return [bias * v for v in problem.predict_batch(many)]

                if i == 0:  # the uniform network: the widest of the ladder within the target
                    new = ladder[_widest_within(corrected(ladder), target)]
                else:
                    shape = {g.name: w[g.name] / g.channels for g in problem.space.groups}
                    new = project_to_budget(problem.space, shape, corrected, target).widths
                rows.append(
                    {"widths": w, "predicted_ms": predicted, "measured_ms": t.median_ms, "bias": bias,
                     "corrected": new, "target_ms": target}
                )  # fmt: skip
            study.set_user_attr(_CALIBRATED, rows)
            done = rows
        uniform = {k: int(v) for k, v in done[0]["corrected"].items()}
        keys = [_key(w) for w in ladder]
        index = keys.index(_key(uniform)) if _key(uniform) in keys else best
        out: dict[str, Widths] = {}
        for row in done[1:]:
            w = {k: int(v) for k, v in row["corrected"].items()}
            if _key(w) != _key(uniform):
                out.setdefault(_key(w), w)
        return list(out.values()), index

    # ------------------------------------------------------------------ 3-4. rerank and guard

    def _rerank(
        self,
        problem: SearchProblem,
        study: optuna.Study,
        screened: list[tuple[Widths, float, float, int]],
        top: list[Widths],
        uniform: Widths,
    ) -> list[Candidate]:
        finetune, proxy = problem.finetune, problem.proxy
        assert finetune is not None and proxy is not None
        network = problem.network
        epochs = network.epochs if network is not None else 1.0
        seed = network.seed if network is not None else 0
        tuned = Finetuned(study, finetune)
        ukey = _key(uniform)
        proxies = {_key(w): v for w, _, v, _ in screened}
        for w in [*top, uniform]:  # networks the calibration re-projected
            if _key(w) not in proxies:
                proxies[_key(w)] = float(proxy(w))
        # Rung 1: the same short fine-tune for the top candidates and the uniform network.
        rung1 = {_key(w): tuned(w, epochs, seed) for w in top}
        rung1[ukey] = tuned(uniform, epochs, seed)
        order = sorted(rung1, key=lambda k: -rung1[k])
        best = next((k for k in order if k != ukey), None)
        widths_of = {_key(w): w for w in top} | {ukey: uniform}
        long = epochs * self.growth
        rung2 = {
            k: [tuned(widths_of[k], long, s) for s in (seed, seed + 1)]
            for k in [*([best] if best else []), ukey]
        }
        mean = {k: sum(v) / len(v) for k, v in rung2.items()}
        guard = uniform_guard(rung2, uniform=ukey, best=best, val_size=problem.val_size or 0)
        names = [
            guard.winner,
            *[k for k in rung2 if k != guard.winner],
            *[k for k in order if k not in rung2],
        ]
        accuracy = {k: mean.get(k, rung1[k]) for k in names}
        rerank = [
            {
                "widths": widths_of[k],
                "uniform": k == ukey,
                "proxy": proxies[k],
                "predicted_ms": float(problem.predict_ms(widths_of[k])),
                f"val_after_{epochs:g}_epochs": rung1[k],
                f"val_after_{long:g}_epochs": mean.get(k),
                "seeds": rung2.get(k),
            }
            for k in order
        ]
        tau = (
            kendalltau([proxies[k] for k in rung1], [rung1[k] for k in rung1]).statistic
            if len(rung1) > 2
            else None
        )
        _summarize(study, distinct=len(screened), rerank=rerank, guard=guard, tau=tau)
        return [Candidate(widths_of[k], float(problem.predict_ms(widths_of[k])), accuracy[k]) for k in names]


def _summarize(
    study: optuna.Study, *, distinct: int, rerank: list[dict[str, Any]], guard: Guard, tau: float | None
) -> None:
    """The run's screen summary, kept in the study for the report: candidates screened, proxy seconds
    each, the budget share, the proxy's rank agreement with the rerank, the rerank and the guard."""
    timing = study.user_attrs.get("proxy_timing", [0.0, 0])
    shares = [float(t.user_attrs["budget_share"]) for t in finished(study) if "budget_share" in t.user_attrs]
    study.set_user_attr(
        _SUMMARY,
        {
            "screened": len(shares),
            "distinct": distinct,
            "proxy_s_per_candidate": timing[0] / timing[1] if timing[1] else None,
            "budget_share_median": sorted(shares)[len(shares) // 2] if shares else None,
            "rank_agreement": None if tau is None or math.isnan(tau) else float(tau),
            "rerank": rerank,
            "calibration": study.user_attrs.get(_CALIBRATED, []),
            "gain_over_uniform": guard.gain,
            "noise": guard.noise,
            "guard": guard.sentence(),
        },
    )


def _screened(study: optuna.Study, budget_ms: float) -> list[tuple[Widths, float, float, int]]:
    """The study's distinct candidates predicted within ``budget_ms``: (widths, predicted ms, proxy
    value, trial), best proxy first."""
    out: dict[str, tuple[Widths, float, float, int]] = {}
    for t in sorted(finished(study), key=lambda t: (-(t.value or 0.0), t.number)):
        if t.value is None or "key" not in t.user_attrs or t.user_attrs["predicted_ms"] > budget_ms:
            continue
        widths = {k: int(v) for k, v in t.user_attrs["widths"].items()}
        out.setdefault(
            t.user_attrs["key"], (widths, float(t.user_attrs["predicted_ms"]), float(t.value), t.number)
        )
    return list(out.values())
