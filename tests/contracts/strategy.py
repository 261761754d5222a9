"""The contract every search strategy passes: subclass ``StrategyContract`` once per registered strategy
(``name``); ``tests/search/test_strategies.py`` holds the subclasses and checks that every registered
name has one.

The problem is synthetic, so the checks are exact: latency is a known law of the widths, the "device"
measures that law, accuracy grows with the kept importance."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import optuna
import pytest
import torch
from tiny_net import EXAMPLE, Tiny, tiny_data

from autoprune.errors import ConfigError
from autoprune.graph import ChannelGroup, Widths
from autoprune.latency import Timing
from autoprune.search import (
    Candidate,
    DenseNetwork,
    SearchProblem,
    WidthSpace,
    get_strategy,
    open_study,
    run_strategy,
)
from autoprune.search.targets import Target, Targets

# Channel counts that are and are not multiples of the rounding step (20 and 36 are not).
GROUPS = tuple(
    ChannelGroup(n, c, ()) for n, c in [("a", 16), ("b", 32), ("c", 64), ("d", 12), ("e", 20), ("f", 36)]
)
SPACE = WidthSpace(GROUPS, min_ratio=0.25)
WEIGHT = {"a": 0.2, "b": 0.5, "c": 1.0, "d": 0.1, "e": 0.3, "f": 0.6}  # ms per kept fraction


def latency(widths: Widths) -> float:
    return 0.1 + sum(WEIGHT[g.name] * widths[g.name] / g.channels for g in GROUPS)


def macs(widths: Widths) -> float:
    return float(sum(widths[g.name] * g.channels for g in GROUPS))


# Some groups have a few important channels (heavy-tailed scores), others many: where widths should differ.
SCORES = {
    g.name: torch.rand(g.channels, generator=torch.Generator().manual_seed(i)) ** (1 + 2 * (i % 3))
    for i, g in enumerate(GROUPS)
}


def accuracy(widths: Widths, report: Any = None) -> float:
    """Kept importance over total: wider is better, the best networks sit at the budget."""
    if report is not None:
        report(0, 0.5)
    kept = sum(float(torch.sort(SCORES[n], descending=True).values[:w].sum()) for n, w in widths.items())
    return kept / sum(float(s.sum()) for s in SCORES.values())


class CountingDevice:
    """Measures the latency law exactly (spread 1.0); counts the networks it times."""

    def __init__(self) -> None:
        self.timed = 0

    def __call__(self, widths_list: list[Widths]) -> list[Timing]:
        self.timed += len(widths_list)
        return [Timing(latency(w), 1.0) for w in widths_list]


BUDGET = 0.6 * latency(SPACE.dense())

# A second device whose costs fall on other groups: where the first budget is cheap, this one binds.
WEIGHT_B = {"a": 0.9, "b": 0.1, "c": 0.2, "d": 0.7, "e": 0.6, "f": 0.2}


def latency_b(widths: Widths) -> float:
    return 0.05 + sum(WEIGHT_B[g.name] * widths[g.name] / g.channels for g in GROUPS)


BUDGET_B = 0.55 * latency_b(SPACE.dense())


class CountingDeviceB(CountingDevice):
    """The second device: measures ``latency_b`` exactly."""

    def __call__(self, widths_list: list[Widths]) -> list[Timing]:
        self.timed += len(widths_list)
        return [Timing(latency_b(w), 1.0) for w in widths_list]


def two_targets(problem: SearchProblem, device_b: CountingDevice) -> SearchProblem:
    """``problem`` (the first device's) under a second budget too, on ``device_b``."""
    network = problem.network
    first = Target(
        "a", problem.budget_ms, lambda ws: [latency(w) for w in ws], measure=problem.measure,
        latency=None if network is None else network.latency,
    )  # fmt: skip
    second = Target(
        "b", BUDGET_B, lambda ws: [latency_b(w) for w in ws], measure=device_b,
        latency=None if network is None or network.latency is None else fraction_latency_b,
    )  # fmt: skip
    return Targets([first, second]).apply(problem)


def problem(device: CountingDevice, *, budget_ms: float = BUDGET) -> SearchProblem:
    return SearchProblem(
        space=SPACE, budget_ms=budget_ms, predict_ms=latency, evaluate=accuracy, measure=device,
        macs=macs, scores=SCORES, tolerance=0.0,
    )  # fmt: skip


class StrategyContract:
    """Subclass with ``name`` (and ``options``) set."""

    name: ClassVar[str]
    options: ClassVar[dict[str, Any]] = {}
    trials: ClassVar[int] = 8
    two_target_trials: ClassVar[int | None] = None  # --trials under two targets (default ``trials``)

    def within_constraint(self, candidate: Candidate, study: optuna.Study) -> bool:
        """What the strategy searched under: the predicted latency, for all but ``flops``."""
        return candidate.predicted_ms <= BUDGET

    def within_every_target(self, candidate: Candidate, study: optuna.Study) -> bool:
        """Under two targets: both predicted latencies within their budgets, for all but ``flops``."""
        return latency(candidate.widths) <= BUDGET + 1e-9 and latency_b(candidate.widths) <= BUDGET_B + 1e-9

    def make_problem(self, device: CountingDevice, *, budget_ms: float, work_dir: Path) -> SearchProblem:
        """The synthetic problem (a strategy that trains the network itself adds one)."""
        return problem(device, budget_ms=budget_ms)

    def run(  # type: ignore[no-untyped-def]
        self,
        tmp_path,
        *,
        trials: int | None = None,
        budget_ms: float = BUDGET,
        seed: int = 0,
        targets: int = 1,
    ):
        strategy = get_strategy(self.name, **self.options)
        settings = strategy.study_settings(seed=seed, trials=self.trials)
        opt_study = open_study(
            storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="s", sampler=settings.sampler,
            directions=settings.directions, pruner=settings.pruner,
        )  # fmt: skip
        device = CountingDevice()
        searched = self.make_problem(device, budget_ms=budget_ms, work_dir=tmp_path)
        if targets == 2:
            searched = two_targets(searched, CountingDeviceB())
        candidates = run_strategy(strategy, searched, study=opt_study, trials=trials or self.trials)
        return candidates, opt_study, device

    def test_candidates_are_on_the_grid_and_within_budget(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        candidates, study, _ = self.run(tmp_path)
        assert candidates, f"{self.name} proposed nothing"
        for c in candidates:
            assert SPACE.contains(c.widths), c.widths
            assert set(c.widths) == {g.name for g in GROUPS}
            assert c.predicted_ms == pytest.approx(latency(c.widths))
            assert self.within_constraint(c, study)

    def test_candidates_are_reproducible_from_the_seed(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        first, _, _ = self.run(tmp_path / "a", seed=3)
        second, _, _ = self.run(tmp_path / "b", seed=3)
        assert [c.widths for c in first] == [c.widths for c in second]

    def test_a_rerun_resumes_and_refuses_another_budget(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        first, study, _device = self.run(tmp_path)
        n_trials = len(study.trials)
        again, study2, device2 = self.run(tmp_path)  # same study, same budget: nothing new to do
        assert len(study2.trials) == n_trials and device2.timed == 0
        assert [c.widths for c in again] == [c.widths for c in first]
        with pytest.raises(ConfigError, match="budget"):
            self.run(tmp_path, budget_ms=BUDGET * 0.8)

    def test_two_targets_are_both_met(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        candidates, study, _ = self.run(tmp_path, targets=2, trials=self.two_target_trials)
        assert candidates, f"{self.name} proposed nothing under two targets"
        for c in candidates:
            assert SPACE.contains(c.widths), c.widths
            assert self.within_every_target(c, study), (c.widths, latency(c.widths), latency_b(c.widths))
        assert study.user_attrs["targets"] == {"a": BUDGET, "b": BUDGET_B}

    def test_a_study_of_another_strategy_is_refused(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        other = "uniform" if self.name != "uniform" else "knapsack"
        storage = f"sqlite:///{tmp_path / 'study.db'}"
        s = optuna.create_study(storage=storage, study_name="s", direction="maximize")
        run_strategy(get_strategy(other), problem(CountingDevice()), study=s, trials=2)
        with pytest.raises(ConfigError, match="strategy"):
            self.run(tmp_path)


def fraction_latency(fractions: torch.Tensor) -> torch.Tensor:
    """``latency`` of kept fractions, differentiable: what a ``DenseNetwork`` gives the gates."""
    weight = torch.tensor([WEIGHT[g.name] for g in GROUPS])
    return 0.1 + (fractions.float() * weight).sum(-1)


def fraction_latency_b(fractions: torch.Tensor) -> torch.Tensor:
    """``latency_b`` of kept fractions, differentiable."""
    weight = torch.tensor([WEIGHT_B[g.name] for g in GROUPS])
    return 0.05 + (fractions.float() * weight).sum(-1)


def dense_network(work_dir: Path, *, differentiable: bool = True) -> DenseNetwork:
    """A real tiny network whose groups are the contract's a..f; its accuracy is the contract's law."""
    torch.manual_seed(0)
    return DenseNetwork(
        module=Tiny(), example=EXAMPLE, train=tiny_data(64), epochs=2.0, lr=0.05, seed=0,
        latency=fraction_latency if differentiable else None, predictor="law",
        accuracy=lambda _module, widths, _scores: accuracy(widths), work_dir=work_dir,
    )  # fmt: skip
