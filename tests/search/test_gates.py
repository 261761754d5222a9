"""W-Gates: gradients through the straight-through gates and LPNet, one gate vector per coupled group,
the latency loss driving the prediction under the budget, and the gated network computing exactly what
the physically pruned one does."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from tiny_net import EXAMPLE, WIDTHS, Tiny, tiny_data
from torch import Tensor, nn

from autoprune.errors import ConfigError
from autoprune.graph import ChannelGraph, apply_widths
from autoprune.models import create_model
from autoprune.predictor import LPNetPredictor
from autoprune.predictor.features import Features, layers_of
from autoprune.search import WidthSpace
from autoprune.search.allocation import gate_widths
from autoprune.search.gating import GatedNetwork, latency_loss, straight_through
from autoprune.search.strategies.gates._train import GateResult, GateSettings, train_gates

WEIGHT = torch.tensor([0.2, 0.5, 1.0, 0.1, 0.3, 0.6])  # ms per kept fraction of groups a..f


def law(fractions: Tensor) -> Tensor:
    """A differentiable latency law of the kept fractions (ms)."""
    return 0.1 + (fractions.float() * WEIGHT).sum(-1)


def space_of(net: nn.Module, example: Tensor = EXAMPLE, min_ratio: float = 0.25) -> WidthSpace:
    return WidthSpace(tuple(ChannelGraph(copy.deepcopy(net), example).groups), min_ratio=min_ratio)


def test_straight_through_is_hard_forward_identity_backward_and_keeps_the_minimum() -> None:
    s = torch.tensor([2.0, -1.0, 0.5, -3.0], requires_grad=True)
    g = straight_through(s, min_keep=1)
    assert g.tolist() == [1.0, 0.0, 1.0, 0.0]
    (g * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert s.grad is not None and s.grad.tolist() == [1.0, 2.0, 3.0, 4.0]
    closed = torch.tensor([-2.0, -1.0, -0.5, -3.0])
    assert straight_through(closed, min_keep=2).tolist() == [0.0, 1.0, 1.0, 0.0]  # the two highest


def test_gradients_reach_every_gate_through_the_task_loss_and_through_lpnet() -> None:
    net = Tiny()
    space = space_of(net)
    gated = GatedNetwork(net, EXAMPLE, space.groups)
    features = Features(space.groups, layers_of(net, [1, 3, 8, 8], space.groups))
    lp = LPNetPredictor(features, members=2, seed=0)  # untrained: any weights carry gradients
    channels = torch.tensor([g.channels for g in space.groups], dtype=torch.float32)
    x, y = tiny_data(8).tensors

    F.cross_entropy(gated(x), y).backward()
    task = [gate.bias.grad.clone() for gate in gated.gates]  # type: ignore[union-attr]
    assert all(float(g.abs()) > 0 for g in task), "the task loss reaches each gate through the hard gate"

    gated.zero_grad()
    gated(x)
    latency_loss(lp.predict_fractions(gated.counts() / channels), 1e-3, weight=1.0).backward()
    for gate in gated.gates:
        assert gate.bias.grad is not None and float(gate.bias.grad.abs()) > 0
        assert gate.out.weight.grad is not None and float(gate.out.weight.grad.abs().sum()) > 0


def test_a_coupled_group_gets_one_gate_vector_read_from_all_its_filters() -> None:
    net = Tiny(residual=True)  # e and f add up: one group
    gated = GatedNetwork(net, EXAMPLE, space_of(net).groups)
    assert [g.name for g in gated.groups] == ["a", "b", "c", "d", "e"]
    x, z = gated._features("e")
    # e's and f's filters (3x3 over 12 and 20 input channels) and their BatchNorm scales, side by side.
    assert x.shape == (20, 12 * 9 + 1 + 20 * 9 + 1) and z.shape == (20,)
    seen: dict[str, Tensor] = {}
    for name in ("e_bn", "f_bn"):
        getattr(net, name).register_forward_hook(lambda _m, _i, out, name=name: seen.__setitem__(name, out))
    gated.fix({"e": list(range(8))})
    gated.eval()
    gated(torch.randn(2, 3, 8, 8))
    for name in ("e_bn", "f_bn"):  # one vector closes the same channels in every coupled layer
        assert float(seen[name][:, 8:].detach().abs().max()) == 0.0
        assert float(seen[name][:, :8].detach().abs().max()) > 0.0
    assert gated.counts()[-1] == 8


def _randomise_batchnorm(net: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.5)  # a closed channel must not leak this


@pytest.mark.parametrize(
    ("spec", "shape"),
    [("tiny", (1, 3, 8, 8)), ("tiny-residual", (1, 3, 8, 8)), ("resnet20", (1, 3, 32, 32)),
     ("mobilenet_v2", (1, 3, 32, 32)), ("vgg11_bn", (1, 3, 32, 32)),
     ("torchvision:mobilenet_v3_small", (1, 3, 64, 64))],
)  # fmt: skip
def test_the_gated_network_computes_what_the_pruned_network_does(spec: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    net = {"tiny": lambda: Tiny(), "tiny-residual": lambda: Tiny(residual=True)}.get(
        spec, lambda: create_model(spec, num_classes=10)
    )()
    _randomise_batchnorm(net)
    example = torch.zeros(shape)
    space = space_of(net, example)
    g = torch.Generator().manual_seed(1)
    keep = {
        grp.name: sorted(torch.randperm(grp.channels, generator=g)[: max(1, grp.channels // 3)].tolist())
        for grp in space.groups
    }
    x = torch.randn(4, *shape[1:], generator=g)
    gated = GatedNetwork(copy.deepcopy(net), example, space.groups)
    gated.fix(keep)
    gated.eval()
    with torch.no_grad():
        out_gated = gated(x)
    pruned = copy.deepcopy(net).eval()
    apply_widths(pruned, example, {k: len(v) for k, v in keep.items()}, keep=keep)
    with torch.no_grad():
        out_pruned = pruned(x)
        out_dense = net.eval()(x)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in net.parameters())
    assert not torch.allclose(out_dense, out_pruned, atol=1e-3), "pruning changed nothing: the check is empty"
    torch.testing.assert_close(out_gated, out_pruned, atol=1e-4, rtol=1e-4)
    gated.remove()
    with torch.no_grad():
        torch.testing.assert_close(gated.net(x), out_dense)  # the hooks are off: the network is untouched


def _train(weight: float, *, budget: float, pull: float = 0.0, epochs: float = 20) -> GateResult:
    torch.manual_seed(0)
    net = Tiny()
    return train_gates(
        net, EXAMPLE, space_of(net), tiny_data(), latency=law, budget_ms=budget, epochs=epochs, lr=0.05,
        settings=GateSettings(weight=weight, gate_lr=0.05, pull=pull, settle=0.0),
    )  # fmt: skip


def test_with_a_large_weight_the_predicted_latency_ends_under_the_budget() -> None:
    dense_ms = float(law(torch.ones(6)))
    budget = 0.4 * dense_ms
    r = _train(50.0, budget=budget)
    assert r.trace[0] == pytest.approx(dense_ms)  # the gates start open, far over the budget
    assert r.latency_ms <= budget, (r.latency_ms, budget, r.counts)
    fractions = torch.tensor([r.counts[k] / c for k, c in WIDTHS.items()])
    assert r.latency_ms == pytest.approx(float(law(fractions)))


def test_the_pull_from_below_keeps_the_network_nearer_the_budget() -> None:
    budget = 0.6 * float(law(torch.ones(6)))
    pulled, free = _train(50.0, budget=budget, pull=1.0), _train(50.0, budget=budget)
    assert free.latency_ms < 0.85 * budget  # without the pull, a large weight shrinks it past the budget
    assert abs(pulled.latency_ms - budget) < abs(free.latency_ms - budget)


def test_gate_widths_round_to_the_grid_then_step_down_or_up_to_the_budget() -> None:
    net = Tiny()
    space = space_of(net)
    scores = {g.name: torch.linspace(-1, 1, g.channels) for g in space.groups}
    counts = {"a": 9, "b": 31, "c": 40, "d": 12, "e": 19, "f": 36}

    def predict(widths: dict[str, int]) -> float:
        return float(law(torch.tensor([widths[g.name] / g.channels for g in space.groups])))

    nearest = {"a": 8, "b": 32, "c": 40, "d": 12, "e": 20, "f": 36}  # the nearest allowed widths
    assert gate_widths(space, scores, counts, predict_ms=predict, budget_ms=predict(nearest)) == nearest
    tight = gate_widths(space, scores, counts, predict_ms=predict, budget_ms=0.8 * predict(nearest))
    assert space.contains(tight) and predict(tight) <= 0.8 * predict(nearest)
    assert all(tight[k] <= nearest[k] for k in nearest) and tight != nearest
    loose = gate_widths(space, scores, counts, predict_ms=predict, budget_ms=1.1 * predict(nearest))
    assert space.contains(loose) and predict(nearest) < predict(loose) <= 1.1 * predict(nearest)
    assert all(loose[k] >= nearest[k] for k in nearest)


def test_a_group_the_network_does_not_have_is_refused() -> None:
    from autoprune.graph import ChannelGroup

    with pytest.raises(ConfigError, match="not a channel group"):
        GatedNetwork(Tiny(), EXAMPLE, [ChannelGroup("nope", 8, ())])


def test_the_chosen_network_keeps_the_minimum_ratio_and_its_gates_fix_it() -> None:
    torch.manual_seed(0)
    net = Tiny()
    space = space_of(net)
    r = train_gates(
        net, EXAMPLE, space, tiny_data(), latency=law, budget_ms=0.3 * float(law(torch.ones(6))),
        epochs=20, lr=0.05, settings=GateSettings(weight=50.0, gate_lr=0.05, min_ratio=0.5, settle=0.3),
    )  # fmt: skip
    assert space.contains(r.widths)
    floor = replace(space, min_ratio=0.5)  # the grid's narrowest at a 0.5 ratio (rounded to the grid)
    assert all(r.widths[g.name] >= floor.choices(g)[0] for g in space.groups)  # even over the budget
    assert any(r.widths[g.name] < space.choices(g)[-1] for g in space.groups)
    # The gates chose with 30 % of the steps left, and the trace stops there: those steps trained the
    # chosen network's weights, its channels fixed.
    assert 0.6 * 40 <= len(r.trace) <= 0.75 * 40


def test_gates_can_start_at_given_widths_on_the_largest_filters() -> None:
    torch.manual_seed(0)
    net = Tiny()
    space = space_of(net)
    start = {"a": 5, "b": 8, "c": 64, "d": 3, "e": 20, "f": 9}
    gated = GatedNetwork(net, EXAMPLE, space.groups, open_init=start)
    gated.eval()
    with torch.no_grad():
        gated(EXAMPLE)
        assert gated.counts().tolist() == [float(start[g.name]) for g in space.groups]
        for g in space.groups:
            _, z = gated._features(g.name)
            opened = set(torch.nonzero(gated._open[g.name]).flatten().tolist())
            assert opened == set(torch.topk(z, start[g.name]).indices.tolist())
