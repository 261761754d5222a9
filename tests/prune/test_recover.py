from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from autoprune import training
from autoprune.data import load_dataset
from autoprune.errors import ConfigError
from autoprune.graph import ChannelGraph
from autoprune.models import create_model
from autoprune.prune import calibration_batches, prune_model, recalibrate_bn

X = torch.randn(2, 6, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 3 + 1  # two batches of 6
Y = torch.zeros(6, dtype=torch.long)


def conv_bn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.3), nn.ReLU(), nn.Flatten()).eval()


def test_running_statistics_become_those_of_the_batch() -> None:
    model = conv_bn()
    conv, bn = model[0], model[1]
    weights = {
        k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "tracked" not in k
    }
    recalibrate_bn(model, [(X[0], Y)])
    with torch.no_grad():
        h = conv(X[0])  # (6, 4, 6, 6)
    torch.testing.assert_close(bn.running_mean, h.mean((0, 2, 3)))
    torch.testing.assert_close(bn.running_var, h.var((0, 2, 3), unbiased=True))  # what BatchNorm tracks
    assert bn.momentum == 0.3 and not model.training and not bn.training
    assert all(torch.equal(p, weights[k]) for k, p in model.named_parameters())


def test_several_batches_are_averaged_with_equal_weight() -> None:
    model = conv_bn()
    recalibrate_bn(model, [(X[0], Y), (X[1], Y)])
    with torch.no_grad():
        h0, h1 = model[0](X[0]), model[0](X[1])
    torch.testing.assert_close(model[1].running_mean, (h0.mean((0, 2, 3)) + h1.mean((0, 2, 3))) / 2)
    assert int(model[1].num_batches_tracked) == 2


def test_without_batches_or_batchnorm() -> None:
    with pytest.raises(ConfigError, match="needs batches"):
        recalibrate_bn(conv_bn(), [])
    plain = nn.Sequential(nn.Conv2d(3, 4, 3)).train()
    recalibrate_bn(plain, [])  # nothing to recalibrate: a no-op, mode untouched
    assert plain.training


@pytest.fixture(scope="module")
def digits_resnet() -> tuple[nn.Module, object]:
    """resnet20 trained one epoch on digits at their native 8x8 (fast, ~95% accurate)."""
    ds = load_dataset("digits", image_size=8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = create_model("resnet20")
    training.train(net, ds.train, epochs=1, lr=0.05, batch_size=32)
    return net, ds


def test_recalibration_recovers_accuracy_right_after_pruning(digits_resnet) -> None:  # type: ignore[no-untyped-def]
    net, ds = digits_resnet
    example = torch.zeros(1, 3, 8, 8)
    groups = ChannelGraph(copy.deepcopy(net), example).groups
    widths = {g.name: int(g.channels * 0.9) for g in groups}
    pruned = prune_model(net, widths=widths, model_spec="resnet20", num_classes=10, input_shape=[1, 3, 8, 8])
    before = training.evaluate(pruned.module, ds.val)
    recalibrate_bn(pruned.module, calibration_batches(ds.train, count=8))
    after = training.evaluate(pruned.module, ds.val)
    # Stale statistics cost most of the accuracy here (~0.37 before, ~0.85 after, 0.94 dense).
    assert after > before, (before, after)
    assert training.evaluate(net, ds.val) > 0.5  # the dense network did learn
