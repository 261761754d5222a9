"""The contract every importance criterion passes: subclass ``CriterionContract`` once per registered
criterion (``criterion_name``); ``tests/search/test_criteria.py`` holds the subclasses and checks that
every registered name has one."""

from __future__ import annotations

import copy
import functools
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autoprune.errors import ConfigError
from autoprune.graph import ChannelGraph, ChannelGroup, apply_widths, keep_top
from autoprune.models import create_model
from autoprune.prune import prune_model
from autoprune.search import channel_scores, get_criterion, list_criteria
from autoprune.search.criteria import Criterion

X = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
Y = torch.arange(8) % 10
BATCHES = [(X[:4], Y[:4]), (X[4:], Y[4:])]
Scored = dict[str, tuple[nn.Module, dict[str, Tensor]]]  # model spec -> (model, its scores)


class ConcatNet(nn.Module):
    """Two branches concatenated (one without BatchNorm) into a depthwise conv, then a 1x1 conv that
    feeds no BatchNorm: the group shapes that residual CNNs do not have."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.dw = nn.Conv2d(14, 14, 3, padding=1, groups=14)
        self.bn = nn.BatchNorm2d(14)
        self.pw = nn.Conv2d(14, 12, 1)
        self.fc = nn.Linear(12, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.cat([self.a(x), self.b(x)], 1)  # (B, 14, H, W)
        x = F.relu(self.pw(F.relu(self.bn(self.dw(x)))))
        return self.fc(x.mean((2, 3)))


def make(spec: str) -> nn.Module:
    """A model with seeded weights and BatchNorm statistics that are not the defaults."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ConcatNet() if spec == "concat" else create_model(spec)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):  # distinct scales, as after training
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.uniform_(m.bias, -0.1, 0.1)
    return model.eval()


@functools.cache
def groups_of(spec: str) -> list[ChannelGroup]:
    return ChannelGraph(make(spec), X[:1]).groups


def state(model: nn.Module) -> dict[str, object]:
    return {
        "tensors": {k: v.clone() for k, v in model.state_dict().items()},
        "grads": {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()},
        "requires_grad": {k: p.requires_grad for k, p in model.named_parameters()},
        "modes": {k: m.training for k, m in model.named_modules()},
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()),
    }


def assert_same_state(a: dict[str, object], b: dict[str, object]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if key in ("tensors", "grads"):
            ta, tb = a[key], b[key]
            assert isinstance(ta, dict) and isinstance(tb, dict) and ta.keys() == tb.keys()
            for name in ta:
                if ta[name] is None or tb[name] is None:
                    assert ta[name] is None and tb[name] is None, name
                else:
                    assert torch.equal(ta[name], tb[name]), name
        else:
            assert a[key] == b[key], key


def zero_channel(model: nn.Module, group: str, channel: int, *, consumers: bool = True) -> None:
    """Zero every weight of ``channel`` in ``group``: filters, BatchNorm scale and shift, and (with
    ``consumers``) the next layers' input weights, so the channel contributes nothing."""
    graph = ChannelGraph(model, X[:1])
    with torch.no_grad():
        for item in graph.group(group):
            layer = item.dep.target.module
            idx = [i for i, r in zip(item.idxs, item.root_idxs, strict=True) if r == channel]
            if not isinstance(layer, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)) or not idx:
                continue
            if graph.dg.is_out_channel_pruning_fn(item.dep.handler):
                layer.weight[idx] = 0
                if layer.bias is not None:
                    layer.bias[idx] = 0
            elif consumers:
                layer.weight[:, idx] = 0


def copy_channel(model: nn.Module, group: str, src: int, dst: int, *, scale: float = 1.0) -> None:
    """Make ``dst`` a copy of ``src`` in every layer producing ``group``'s channels: filters (times
    ``scale``), biases, BatchNorm parameters and statistics. The next layers' input weights stay."""
    graph = ChannelGraph(model, X[:1])
    with torch.no_grad():
        for item in graph.group(group):
            layer = item.dep.target.module
            if not graph.dg.is_out_channel_pruning_fn(item.dep.handler):
                continue
            where = dict(zip(item.root_idxs, item.idxs, strict=True))
            if src not in where or dst not in where:
                continue
            i, j = where[src], where[dst]
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                layer.weight[j] = layer.weight[i] * scale
                if layer.bias is not None:
                    layer.bias[j] = layer.bias[i] * scale
            elif isinstance(layer, nn.BatchNorm2d):
                for t in (layer.weight, layer.bias, layer.running_mean, layer.running_var):
                    t[j] = t[i]


class CriterionContract:
    """What every importance criterion must do; subclass once per registered criterion."""

    criterion_name: ClassVar[str]
    models: ClassVar[tuple[str, ...]] = ("resnet20", "mobilenet_v2", "concat")

    @pytest.fixture(scope="class")
    @classmethod
    def scored(cls) -> Scored:
        """Each model and its scores, computed once per criterion."""
        out = {}
        for spec in cls.models:
            model = make(spec)
            out[spec] = (model, channel_scores(model, X[:1], cls.criterion_name, batches=BATCHES))
        return out

    def test_is_registered(self) -> None:
        assert self.criterion_name in list_criteria()
        crit = get_criterion(self.criterion_name)
        assert isinstance(crit, Criterion) and crit.name == self.criterion_name
        assert not crit.needs_grad or crit.needs_data  # gradients come from the calibration batches

    @pytest.mark.parametrize("spec", models)
    def test_one_finite_score_per_channel_of_every_group(self, scored: Scored, spec: str) -> None:
        _, scores = scored[spec]
        groups = groups_of(spec)
        assert list(scores) == [g.name for g in groups]
        for g in groups:
            assert scores[g.name].shape == (g.channels,), g.name
            assert scores[g.name].dtype == torch.float32 and torch.isfinite(scores[g.name]).all(), g.name

    def test_scores_are_deterministic(self, scored: Scored) -> None:
        model, scores = scored["resnet20"]
        again = channel_scores(model, X[:1], get_criterion(self.criterion_name), batches=BATCHES)
        for name in scores:
            assert torch.equal(scores[name], again[name]), name
        # Scoring one group alone gives what it got among all the others.
        crit = get_criterion(self.criterion_name)
        graph = ChannelGraph(model, X[:1])
        crit.prepare(model, BATCHES)
        last = graph.groups[-1].name
        torch.testing.assert_close(crit(graph.group(last)).float(), scores[last])
        assert all(p.grad is None for p in model.parameters())  # scoring a group leaves no gradients

    def test_model_is_left_as_it_was(self) -> None:
        model = make("resnet20").train()
        model.layer2.eval()  # a mixed mode must come back mixed
        F.cross_entropy(model(X[:2]), Y[:2]).backward()  # gradients the caller is accumulating
        model.fc.weight.requires_grad_(False)
        before = state(model)
        channel_scores(model, X[:1], self.criterion_name, batches=BATCHES)
        assert_same_state(before, state(model))

    def test_data_needs_are_enforced(self) -> None:
        model = make("resnet20")
        if get_criterion(self.criterion_name).needs_data:
            with pytest.raises(ConfigError, match="needs calibration data: pass batches="):
                channel_scores(model, X[:1], self.criterion_name)
        else:
            assert channel_scores(model, X[:1], self.criterion_name).keys()

    @pytest.mark.parametrize("spec", ["resnet20", "concat"])  # mobilenet_v2's depthwise: in concat too
    def test_pruning_with_the_scores_runs(self, scored: Scored, spec: str) -> None:
        model, scores = scored[spec]
        # At least 10 of the concat group's 14 channels, so neither branch (8 and 6 channels) is emptied.
        widths = {
            name: max(10, len(s) // 2) if spec == "concat" else len(s) // 2 for name, s in scores.items()
        }
        if spec == "resnet20":
            p = prune_model(
                model,
                widths=widths,
                model_spec=spec,
                num_classes=10,
                input_shape=[1, 3, 32, 32],
                scores=scores,
            )
            assert p.keep == keep_top(scores, widths)
            pruned = p.module
        else:
            pruned = copy.deepcopy(model)
            apply_widths(pruned, X[:1], widths, keep=keep_top(scores, widths))
        out = pruned(X)
        assert out.shape == (8, 10) and torch.isfinite(out).all()
        assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
