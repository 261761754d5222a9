"""What defines provable filter pruning (PFP): sensitivities are the channels' largest shares of the next
layer's pre-activations; sampling by them with the bound's number of draws keeps the next layer within
ε in at least 1 - δ of the draws; spread-out sensitivity keeps more filters; ``--strategy pfp`` bisects ε
to the budget. (The criterion's contract is ``TestPFP`` in test_criteria.py, the strategy's
``TestPFPStrategy`` in test_strategies.py.)"""

from __future__ import annotations

import functools
import itertools
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import torch
import torch.nn.functional as F
from contracts.strategy import BUDGET, SPACE, CountingDevice, dense_network, latency, problem
from tiny_net import tiny_data
from torch import nn

from autoprune.errors import BudgetError, ConfigError
from autoprune.search import get_strategy, open_study, run_strategy
from autoprune.search.criteria._pfp import (
    GroupSensitivity,
    expected_width,
    pfp_sample,
    pfp_statistics,
    pfp_widths,
    sample_size,
)
from autoprune.search.strategies.pfp import PFPStrategy
from autoprune.training import train


def two_layers(w2: list[float]) -> nn.Module:
    """x -> ReLU(1x1 conv to channels (x, 2x)) -> 1x1 conv with weights ``w2`` -> 1 unit per pixel."""
    net = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU(), nn.Conv2d(2, 1, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))
        net[2].weight.copy_(torch.tensor(w2).view(1, 2, 1, 1))
    return net


def test_sensitivity_is_the_largest_share_of_the_next_layers_preactivations() -> None:
    x = torch.rand(4, 1, 5, 5) + 0.1
    batches = [(x, torch.zeros(4, dtype=torch.long))]
    # Both weights positive: channel shares are 1/3 and 2/3 at every unit.
    got = pfp_statistics(two_layers([1.0, 1.0]), x[:1], batches)["0"]
    torch.testing.assert_close(got.sensitivity, torch.tensor([1 / 3, 2 / 3]))
    assert got.units == 25  # one next-layer channel at 5 x 5 positions
    # Weights of opposite signs: each channel is all of its sign's sum, so neither can be dropped.
    got = pfp_statistics(two_layers([1.0, -1.0]), x[:1], batches)["0"]
    torch.testing.assert_close(got.sensitivity, torch.tensor([1.0, 1.0]))


def test_the_bound_and_the_expected_width() -> None:
    # m = ceil((6 + 2 eps) S K log(8 eta / delta) / eps^2), K = 3
    assert sample_size(2.0, eps=0.5, delta=0.1, units=10) == 1124  # 7 * 2 * 3 * log(800) / 0.25 = 1123.0
    assert sample_size(2.0, eps=1.0, delta=0.1, units=10) < sample_size(2.0, eps=0.5, delta=0.1, units=10)
    assert sample_size(2.0, eps=0.5, delta=0.01, units=10) > sample_size(2.0, eps=0.5, delta=0.1, units=10)
    s = torch.tensor([0.5, 0.25, 0.25])
    assert expected_width(s, 1) == pytest.approx(1.0)
    assert expected_width(s, 2) == pytest.approx(3 - 0.5**2 - 2 * 0.75**2)
    assert expected_width(s, 10**9) == pytest.approx(3.0)
    with pytest.raises(ConfigError, match="eps > 0"):
        sample_size(1.0, eps=0.0, delta=0.1, units=1)


def test_more_spread_out_sensitivity_keeps_more_filters() -> None:
    grid = {n: list(range(1, 65)) for n in ("flat", "peaked", "peaked_less")}
    stats = {
        "flat": GroupSensitivity(torch.full((64,), 0.1), 1000),  # S = 6.4, spread over all 64
        "peaked": GroupSensitivity(torch.cat([torch.full((4,), 0.9), torch.full((60,), 2.8 / 60)]), 1000),
        "peaked_less": GroupSensitivity(torch.cat([torch.full((4,), 0.9), torch.full((60,), 0.01)]), 1000),
    }
    assert stats["flat"].total == pytest.approx(stats["peaked"].total)  # same draws, m, for both
    for eps in (4.0, 8.0, 16.0, 32.0, 64.0):
        w = pfp_widths(stats, grid, eps=eps, delta=0.1)
        assert w["flat"] > w["peaked"] > w["peaked_less"], (eps, w)


@functools.cache
def trained_two_conv() -> tuple[GroupSensitivity, torch.Tensor, torch.Tensor]:
    """A trained conv-BN-ReLU-conv-BN-ReLU net: the first group's PFP statistics from 64 training
    inputs, and, on 64 held-out inputs, the activations the second conv reads and its weight."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 4),
    )  # fmt: skip
    data = tiny_data(256, seed=0)
    train(net, data, epochs=3, lr=0.05, seed=0)
    net.eval()
    x, y = data.tensors
    held = tiny_data(64, seed=1).tensors[0]
    stats = pfp_statistics(net, held[:1], [(x[:64], y[:64])])["0"]
    with torch.no_grad():
        act = net[2](net[1](net[0](held)))
    return stats, act, net[3].weight.detach()


def fraction_within(eps: float, m: int, draws: int = 200) -> tuple[float, float]:
    """Over ``draws`` seeded PFP samples of ``m`` draws and the held-out inputs: the fraction of (draw,
    input) pairs where every pre-activation unit of the next conv, per sign of its weights, is within
    ε of the unpruned one (|ẑ - z| <= ε z, the paper's guarantee), and the worst relative error."""
    stats, act, w = trained_two_conv()
    parts = [w.clamp_min(0), (-w).clamp_min(0)]
    full = [F.conv2d(act, p, padding=1) for p in parts]
    gen = torch.Generator().manual_seed(0)
    ok, worst = 0, 0.0
    for _ in range(draws):
        kept, weights = pfp_sample(stats.sensitivity, m, gen)
        scale = torch.zeros(len(stats.sensitivity))
        scale[kept] = weights.float()
        sampled = act * scale.view(1, -1, 1, 1)
        good = torch.ones(len(act), dtype=torch.bool)
        for p, z in zip(parts, full, strict=True):
            err = (F.conv2d(sampled, p, padding=1) - z).abs()
            units = z > 1e-6
            good &= ~((err > eps * z) & units).flatten(1).any(1)
            worst = max(worst, float((err / z.clamp_min(1e-6))[units].max()))
        ok += int(good.sum())
    return ok / (draws * len(act)), worst


def test_the_sampled_layer_is_within_eps_in_at_least_one_minus_delta_of_the_draws() -> None:
    eps, delta = 0.5, 0.1
    stats, _, _ = trained_two_conv()
    m = sample_size(stats.total, eps=eps, delta=delta, units=stats.units)
    within, worst = fraction_within(eps, m)
    # Measured: 1.000 of 200 draws x 64 held-out inputs, worst unit 0.11 (the bound is conservative).
    assert within >= 1 - delta, (m, within, worst)
    # The check has teeth: with a hundredth of the draws it fails (measured 0.80, worst unit 1.19).
    within_few, worst_few = fraction_within(eps, max(1, m // 100), draws=100)
    assert within_few < 1 - delta and worst_few > eps, (within_few, worst_few)


# -- the strategy -----------------------------------------------------------------------------------


def run_pfp(tmp_path: Path, *, budget_ms: float = BUDGET, **options: object):  # type: ignore[no-untyped-def]
    strategy = get_strategy("pfp", **options)
    s = strategy.study_settings(seed=0, trials=1)
    study = open_study(storage=f"sqlite:///{tmp_path / 'p.db'}", study_name="p", sampler=s.sampler,
                       directions=s.directions)  # fmt: skip
    p = replace(problem(CountingDevice(), budget_ms=budget_ms), network=dense_network(tmp_path))
    return run_strategy(strategy, p, study=study, trials=1), study, p


def test_eps_is_bisected_to_the_budget(tmp_path: Path) -> None:
    candidates, study, p = run_pfp(tmp_path)
    record = study.user_attrs["pfp"]
    eps = record["eps"][0]
    strategy = PFPStrategy()
    stats = strategy.statistics(p)
    choices = {g.name: SPACE.choices(g) for g in SPACE.groups}

    def widths(e: float) -> dict[str, int]:
        return pfp_widths(stats, choices, eps=e, delta=0.1)

    assert candidates[0].widths == widths(eps) == record["widths"][0]
    assert latency(widths(eps)) <= BUDGET < latency(SPACE.dense())
    assert latency(widths(eps * (1 - 1e-6))) > BUDGET  # a smaller ε, a wider network: over the budget
    # Fallbacks: larger ε, narrower networks, further under the budget.
    assert record["eps"] == sorted(record["eps"]) and len(candidates) > 1
    assert all(a.predicted_ms > b.predicted_ms for a, b in itertools.pairwise(candidates))
    # Groups differ in compressibility: the allocation is not one ratio for all.
    ratios = {g.name: candidates[0].widths[g.name] / g.channels for g in SPACE.groups}
    assert len(set(ratios.values())) > 2, ratios


def test_a_given_eps_is_used_or_refused_when_over_budget(tmp_path: Path) -> None:
    candidates, study, p = run_pfp(tmp_path, eps=40.0)
    assert study.user_attrs["pfp"]["eps"][0] == 40.0 and candidates[0].predicted_ms <= BUDGET
    stats = PFPStrategy().statistics(p)
    with pytest.raises(BudgetError, match="raise --pfp-eps, or drop it to bisect"):
        PFPStrategy(eps=1.0).allocate(stats, p)
    with pytest.raises(BudgetError, match="raise the budget"):
        PFPStrategy().allocate(stats, replace(p, budget_ms=0.01))
    with pytest.raises(ConfigError, match="--pfp-eps -1"):
        get_strategy("pfp", eps=-1.0)
    with pytest.raises(ConfigError, match="--pfp-delta 2"):
        get_strategy("pfp", delta=2.0)
    with pytest.raises(ConfigError, match="--pfp-batches 0"):
        get_strategy("pfp", batches=0)


def test_pfp_needs_the_dense_network(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'n.db'}", study_name="n")
    with pytest.raises(ConfigError, match=r"SearchProblem\.network"):
        run_strategy(
            get_strategy("pfp"), replace(problem(CountingDevice()), network=None), study=study, trials=1
        )
