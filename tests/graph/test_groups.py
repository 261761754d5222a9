from __future__ import annotations

import copy

import pytest
import torch

from autoprune.errors import ConfigError
from autoprune.graph import (
    ChannelGraph,
    apply_widths,
    check_widths,
    measure_widths,
    narrowest_widths,
)
from autoprune.models import create_model
from autoprune.search import get_criterion

X = torch.randn(2, 3, 32, 32)


@pytest.mark.parametrize("spec", ["resnet20", "vgg11_bn", "mobilenet_v2", "torchvision:resnet18"])
def test_pruning_to_widths_gives_exactly_those_widths(spec: str) -> None:
    model = create_model(spec).eval()
    groups = ChannelGraph(copy.deepcopy(model), X[:1]).groups
    # A different, irregular width per group: every group keeps between one and all of its channels.
    widths = {g.name: max(1, (g.channels * (i % 4 + 1)) // 5) for i, g in enumerate(groups)}
    apply_widths(model, X[:1], widths)
    assert measure_widths(model, X[:1]) == widths
    out = model(X)
    assert out.shape == (2, 10) and torch.isfinite(out).all()  # classifier outputs never pruned


def test_group_names_are_stable_and_residual_adds_couple_convs() -> None:
    a = ChannelGraph(create_model("resnet20"), X[:1]).groups
    b = ChannelGraph(create_model("resnet20"), X[:1]).groups
    assert [(g.name, g.channels) for g in a] == [(g.name, g.channels) for g in b]
    stem = next(g for g in a if g.name == "conv1")
    # The stem and every stage-1 block's second conv feed the same residual stream.
    assert {"layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2"} <= set(stem.members)
    assert len(a) == 12  # stem+stage1, stage2, stage3 streams, and 9 block-internal groups
    assert "fc" not in {m for g in a for m in g.members}


def test_kept_indices_are_the_ones_the_criterion_ranks_highest() -> None:
    model = create_model("vgg11_bn").eval()
    first = model.features[0]
    with torch.no_grad():
        first.weight.mul_(0.01)
        first.weight[[5, 9, 40]] *= 1000.0  # three filters with by far the largest L1 norm
    keep = apply_widths(model, X[:1], {"features.0": 3}, criterion=get_criterion("l1"))
    assert keep["features.0"] == [5, 9, 40]


def test_rebuilding_from_kept_indices_reproduces_the_pruned_network() -> None:
    dense = create_model("resnet20").eval()
    widths = narrowest_widths(ChannelGraph(copy.deepcopy(dense), X[:1]).groups, min_ratio=0.5)
    a = copy.deepcopy(dense)
    keep = apply_widths(a, X[:1], widths, criterion=get_criterion("l1"))
    b = copy.deepcopy(dense)
    apply_widths(b, X[:1], widths, keep=keep)
    torch.testing.assert_close(a(X), b(X))


def test_widths_validation() -> None:
    groups = ChannelGraph(create_model("resnet20"), X[:1]).groups
    with pytest.raises(ConfigError, match="unknown groups"):
        check_widths(groups, {"nope": 3})
    with pytest.raises(ConfigError, match="outside"):
        check_widths(groups, {"conv1": 17})
