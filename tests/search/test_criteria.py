from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch_pruning as tp
from contracts import covered
from contracts.criterion import (
    BATCHES,
    CriterionContract,
    X,
    copy_channel,
    make,
    zero_channel,
)
from tiny_net import Tiny
from torch import Tensor, nn

from autoprune.data import load_dataset
from autoprune.errors import ConfigError
from autoprune.graph import ChannelGraph, apply_widths, keep_top
from autoprune.prune.recover import recalibrate_bn
from autoprune.search import channel_scores, get_criterion, list_criteria, register_criterion
from autoprune.search.criteria import Criterion
from autoprune.training import calibration_batches, evaluate, train

# -- one class per criterion, with the property that defines it ------------------------------------


class TestL1(CriterionContract):
    criterion_name = "l1"

    @pytest.mark.parametrize(
        "group", ["conv1", "layer1.0.conv1"]
    )  # a residual stream, a block-internal group
    def test_a_zeroed_channel_ranks_last(self, group: str) -> None:
        model = make("resnet20")
        zero_channel(model, group, 5)
        scores = channel_scores(model, X[:1], self.criterion_name)[group]
        assert scores[5] == 0 and (scores[torch.arange(len(scores)) != 5] > 0).all()
        assert 5 not in keep_top({group: scores}, {group: len(scores) - 1})[group]


class TestL2(TestL1):
    criterion_name = "l2"

    def test_l2_squares_the_weights(self) -> None:
        model = make("resnet20")
        with torch.no_grad():
            model.layer1[0].conv1.weight.fill_(0.5)
            model.layer1[0].bn1.weight.fill_(2.0)
            model.layer1[0].conv2.weight.fill_(0.5)
        scores = channel_scores(model, X[:1], self.criterion_name)["layer1.0.conv1"]
        # 16*3*3 filter weights of 0.25, one BN scale of 4, 16*3*3 consumer input weights of 0.25
        torch.testing.assert_close(scores, torch.full((16,), 144 * 0.25 + 4 + 144 * 0.25))


class TestBNScale(CriterionContract):
    criterion_name = "bn_scale"

    def test_scores_follow_abs_gamma(self) -> None:
        model = make("resnet20")
        gamma = torch.randn(16, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            model.layer1[0].bn1.weight.copy_(gamma)
        scores = channel_scores(model, X[:1], self.criterion_name)["layer1.0.conv1"]
        torch.testing.assert_close(scores, gamma.abs())

    def test_coupled_batchnorms_are_averaged_per_channel(self) -> None:
        model = make("concat")
        with torch.no_grad():
            model.a[1].weight.copy_(torch.arange(8.0) * 3)
            model.bn.weight.copy_(-torch.arange(14.0))
        scores = channel_scores(model, X[:1], self.criterion_name)["a.0"]
        branch_a = (torch.arange(8.0) * 3 + torch.arange(8.0)) / 2  # a's BN and the BN after the concat
        branch_b = torch.arange(8.0, 14.0)  # only the BN after the concat scales b's channels
        torch.testing.assert_close(scores, torch.cat([branch_a, branch_b]))

    def test_channels_no_batchnorm_scales_get_the_group_mean(self) -> None:
        model = make("concat")
        model.bn = nn.Identity()  # now only branch a's channels pass a BatchNorm
        with torch.no_grad():
            model.a[1].weight.copy_(torch.arange(8.0))
        scores = channel_scores(model, X[:1], self.criterion_name)["a.0"]
        torch.testing.assert_close(scores, torch.cat([torch.arange(8.0), torch.full((6,), 3.5)]))

    def test_a_group_without_batchnorm_falls_back_to_l1(self) -> None:
        model = make("concat")
        scores = channel_scores(model, X[:1], self.criterion_name)["pw"]
        torch.testing.assert_close(scores, channel_scores(model, X[:1], "l1")["pw"])
        assert scores.std() > 0


class TestTaylor(CriterionContract):
    criterion_name = "taylor"

    def test_a_dead_channel_scores_zero(self) -> None:
        model = make("resnet20")
        zero_channel(model, "layer1.0.conv1", 3, consumers=False)  # filter, BN scale and shift: outputs 0
        scores = channel_scores(model, X[:1], self.criterion_name, batches=BATCHES)["layer1.0.conv1"]
        assert scores[3] == 0 and (scores[torch.arange(16) != 3] > 0).all()

    def test_a_channel_without_effect_on_the_loss_scores_zero(self) -> None:
        model = make("resnet20")
        with torch.no_grad():
            model.layer1[0].conv2.weight[:, 7] = 0  # nothing reads channel 7: the loss cannot see it
        scores = channel_scores(model, X[:1], self.criterion_name, batches=BATCHES)["layer1.0.conv1"]
        assert scores[7] == 0 and (scores[torch.arange(16) != 7] > 0).all()

    def test_scores_depend_on_the_data(self) -> None:
        model = make("resnet20")
        a = channel_scores(model, X[:1], self.criterion_name, batches=BATCHES[:1])
        b = channel_scores(model, X[:1], self.criterion_name, batches=BATCHES[1:])
        assert not torch.equal(a["conv1"], b["conv1"])


class TestFPGM(CriterionContract):
    criterion_name = "fpgm"

    def test_a_filter_at_the_median_ranks_last(self) -> None:
        model = make("resnet20")
        conv = model.layer1[0].conv1
        with torch.no_grad():
            conv.weight[9] = conv.weight.mean(0)  # the others can stand in for it
        scores = channel_scores(model, X[:1], self.criterion_name)["layer1.0.conv1"]
        assert int(scores.argmin()) == 9

    def test_signs_count(self) -> None:
        model = make("resnet20")
        conv = model.layer1[0].conv1
        with torch.no_grad():
            conv.weight[2] = conv.weight.mean(0)
            conv.weight[4] = -conv.weight[2]  # equal to the median filter in |w|, not in w
        scores = channel_scores(model, X[:1], self.criterion_name)["layer1.0.conv1"]
        assert int(scores.argmin()) == 2 and scores[4] > scores[2]


class TestRedundancy(CriterionContract):
    criterion_name = "redundancy"

    @pytest.mark.parametrize("group", ["layer1.0.conv1", "conv1"])  # one conv + BN; a residual stream
    def test_of_two_duplicates_one_goes_first_and_the_other_stays(self, group: str) -> None:
        model = make("resnet20")
        copy_channel(model, group, 4, 9)  # same maps on any data; equal magnitudes: the higher index goes
        scores = channel_scores(model, X[:1], self.criterion_name, batches=BATCHES)[group]
        assert int(scores.argmin()) == 9
        assert 4 in keep_top({group: scores}, {group: len(scores) - 1})[group]

    def test_a_cluster_of_three_keeps_one_before_the_others(self) -> None:
        model = make("resnet20")
        for dst in (9, 12):
            copy_channel(model, "layer1.0.conv1", 4, dst)
        scores = channel_scores(model, X[:1], self.criterion_name, batches=BATCHES)["layer1.0.conv1"]
        assert set(scores.argsort()[:2].tolist()) == {9, 12}
        assert 4 in keep_top({"g": scores}, {"g": len(scores) - 2})["g"]

    def test_of_two_duplicates_the_weaker_goes(self) -> None:
        model = make("concat")  # group pw: a conv without BatchNorm, so its maps scale with its filters
        copy_channel(model, "pw", 3, 7, scale=0.5)  # maps perfectly correlated, half as large
        scores = channel_scores(model, X[:1], self.criterion_name, batches=BATCHES)["pw"]
        assert int(scores.argmin()) == 7 and 3 in keep_top({"g": scores}, {"g": len(scores) - 1})["g"]

    def test_a_dead_channel_ranks_last(self) -> None:
        model = make("resnet20")
        zero_channel(model, "layer1.0.conv1", 3, consumers=False)  # filter, BN scale and shift: outputs 0
        scores = channel_scores(model, X[:1], self.criterion_name, batches=BATCHES)["layer1.0.conv1"]
        assert int(scores.argmin()) == 3

    def test_scores_depend_on_the_data(self) -> None:
        model = make("resnet20")
        a = channel_scores(model, X[:1], self.criterion_name, batches=BATCHES[:1])
        b = channel_scores(model, X[:1], self.criterion_name, batches=BATCHES[1:])
        assert any(not torch.equal(a[n], b[n]) for n in a)


class TestCorrelation(CriterionContract):
    criterion_name = "correlation"

    def test_of_a_correlated_pair_the_smaller_filter_goes(self) -> None:
        model = make("resnet20")
        copy_channel(model, "layer1.0.conv1", 4, 9, scale=2.0)  # correlation 1; filter 9 twice as large
        scores = channel_scores(model, X[:1], self.criterion_name)["layer1.0.conv1"]
        assert int(scores.argmin()) == 4
        assert 9 in keep_top({"g": scores}, {"g": len(scores) - 1})["g"]

    def test_a_correlated_triple_keeps_its_largest_filter_first(self) -> None:
        model = make("resnet20")
        copy_channel(model, "layer1.0.conv1", 4, 9, scale=0.5)
        copy_channel(model, "layer1.0.conv1", 4, 12, scale=-1.0)  # anti-correlated: not a duplicate
        copy_channel(model, "layer1.0.conv1", 4, 13, scale=0.25)
        scores = channel_scores(model, X[:1], self.criterion_name)["layer1.0.conv1"]
        assert scores.argsort()[:2].tolist() == [13, 9]  # the smallest first, then the middle one
        assert 4 in keep_top({"g": scores}, {"g": len(scores) - 2})["g"]
        assert 12 in keep_top({"g": scores}, {"g": len(scores) - 2})["g"]

    def test_an_all_zero_filter_ranks_last(self) -> None:
        model = make("resnet20")
        zero_channel(model, "layer1.0.conv1", 6)
        scores = channel_scores(model, X[:1], self.criterion_name)["layer1.0.conv1"]
        assert int(scores.argmin()) == 6


class TestRandom(CriterionContract):
    criterion_name = "random"

    def test_seeds_give_different_reproducible_scores(self) -> None:
        model = make("resnet20")
        a0 = channel_scores(model, X[:1], get_criterion("random", seed=0))
        a0_again = channel_scores(model, X[:1], get_criterion("random", seed=0))
        a1 = channel_scores(model, X[:1], get_criterion("random", seed=1))
        assert all(torch.equal(a0[n], a0_again[n]) for n in a0)
        assert all(not torch.equal(a0[n], a1[n]) for n in a0)
        assert not torch.equal(a0["layer1.0.conv1"], a0["layer1.1.conv1"])  # groups draw differently


# -- the seed's claim: accuracy right after pruning (BatchNorm recalibrated, no fine-tune) vs L1 -------

DIGITS = 8  # digits at their own 8x8: Tiny trains in about a second


@functools.cache
def trained_tiny(seed: int) -> nn.Module:
    """Tiny trained 3 epochs on digits (about 98 % test accuracy)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Tiny(10)
        train(model, load_dataset("digits", image_size=DIGITS).train, epochs=3, lr=0.1, seed=seed)
    return model.eval()


def accuracy_after_pruning(model: nn.Module, criterion: str, widths: dict[str, int], seed: int = 0) -> float:
    """Test accuracy of ``model`` pruned to ``widths`` by ``criterion``, BatchNorm recalibrated, untrained."""
    data = load_dataset("digits", image_size=DIGITS)
    batches = calibration_batches(data.train, count=4, seed=seed)
    example = torch.zeros(1, 3, DIGITS, DIGITS)
    scores = channel_scores(model, example, criterion, batches=batches)
    pruned = copy.deepcopy(model)
    apply_widths(pruned, example, widths, keep=keep_top(scores, widths))
    recalibrate_bn(pruned, batches)
    return evaluate(pruned, data.test)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pruned_trained_networks_stay_well_above_chance(seed: int) -> None:
    """The seed claims redundancy beats L1 here; measured on Tiny/digits at half of every group's width it
    does not: test accuracy over seeds 0-5, redundancy 0.45-0.65 (mean 0.54) against L1 0.54-0.83
    (mean 0.68), and at 3/4 widths 0.87-0.94 against 0.95-0.96 (dense 0.98). What holds is that both
    keep a working network: far above chance (0.1), at most the dense accuracy."""
    model = trained_tiny(seed)
    dense = evaluate(model, load_dataset("digits", image_size=DIGITS).test)
    widths = {g.name: g.channels // 2 for g in ChannelGraph(model, torch.zeros(1, 3, DIGITS, DIGITS)).groups}
    for criterion in ("redundancy", "l1"):
        acc = accuracy_after_pruning(model, criterion, widths, seed)
        assert 0.3 < acc <= dense, (criterion, acc, dense)


def doubled(model: Tiny, layer: str) -> Tiny:
    """``model`` with every channel of ``layer`` duplicated and the next layer reading each copy at half
    weight: the same function, with the repeated filters magnitude ranking cannot tell apart."""
    out = copy.deepcopy(model)
    conv, bn = getattr(out, layer), getattr(out, f"{layer}_bn")
    names = list(dict(out.named_children()))
    nxt = getattr(out, names[names.index(f"{layer}_bn") + 1])
    wide = nn.Conv2d(conv.in_channels, 2 * conv.out_channels, 3, conv.stride, 1, bias=False)
    wide_bn = nn.BatchNorm2d(2 * conv.out_channels)
    reader = nn.Conv2d(2 * nxt.in_channels, nxt.out_channels, 3, nxt.stride, 1, bias=False)
    with torch.no_grad():
        wide.weight.copy_(torch.cat([conv.weight] * 2))
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(wide_bn, name).copy_(torch.cat([getattr(bn, name)] * 2))
        reader.weight.copy_(torch.cat([nxt.weight / 2] * 2, 1))
    setattr(out, layer, wide)
    setattr(out, f"{layer}_bn", wide_bn)
    setattr(out, names[names.index(f"{layer}_bn") + 1], reader)
    return out.eval()


def test_repeated_filters_are_pruned_where_l1_keeps_both_copies() -> None:
    """The mechanism behind the claim, on a constructed network: with layer d's 12 filters each present
    twice, pruning d back to 12 by redundancy keeps one copy of each (the dense accuracy, after
    recalibration); L1 scores the copies alike and keeps both copies of the largest, losing accuracy
    (measured: 0.964 against 0.983)."""
    model = trained_tiny(0)
    data = load_dataset("digits", image_size=DIGITS)
    wide = doubled(model, "d")
    dense = evaluate(model, data.test)
    assert evaluate(wide, data.test) == dense
    batches = calibration_batches(data.train, count=4)
    kept = {
        criterion: keep_top(
            channel_scores(wide, torch.zeros(1, 3, DIGITS, DIGITS), criterion, batches=batches), {"d": 12}
        )["d"]
        for criterion in ("redundancy", "l1")
    }
    assert sorted(k % 12 for k in kept["redundancy"]) == list(range(12))  # one copy of every filter
    assert len({k % 12 for k in kept["l1"]}) < 12
    redundancy = accuracy_after_pruning(wide, "redundancy", {"d": 12})
    l1 = accuracy_after_pruning(wide, "l1", {"d": 12})
    assert abs(redundancy - dense) <= 0.005 and l1 < redundancy, (redundancy, l1, dense)


class TestPFP(CriterionContract):
    """The contract; what defines PFP (sensitivities, sampling, the bound) is in test_pfp.py."""

    criterion_name = "pfp"

    def test_a_channel_nothing_reads_is_never_kept_first(self) -> None:
        model = make("resnet20")
        with torch.no_grad():
            model.layer1[0].conv2.weight[:, 7] = 0  # the next layer ignores channel 7: sensitivity 0
        crit = get_criterion("pfp", seed=None)
        crit.prepare(model, BATCHES)
        group = ChannelGraph(model, X[:1]).group("layer1.0.conv1")
        sens = crit(group)
        assert sens[7] == 0 and (sens[torch.arange(16) != 7] > 0).all()
        for seed in range(5):  # importance sampling never draws a zero-probability channel before the others
            crit.seed = seed  # type: ignore[attr-defined]
            keys = crit(group)
            assert int(keys.argmin()) == 7 and not torch.equal(keys.argsort(), sens.argsort())


# -- the registry -----------------------------------------------------------------------------------


def test_every_registered_criterion_has_a_contract_class() -> None:
    assert set(list_criteria()) == covered(CriterionContract, "criterion_name")


def test_unknown_names_and_options_are_config_errors() -> None:
    message = "unknown importance criterion 'nope': use one of bn_scale, correlation, fpgm"
    with pytest.raises(ConfigError, match=message):
        get_criterion("nope")
    with pytest.raises(ConfigError, match="criterion 'l1' does not take these options"):
        get_criterion("l1", seed=0)


def test_register_a_new_criterion() -> None:
    @register_criterion
    class Width(Criterion):
        """Scores channels by index: a toy for this test."""

        name = "test_index"

        def __call__(self, group: tp.Group) -> Tensor:
            _, idxs = group[0]
            return torch.arange(len(idxs), dtype=torch.float32)

    try:
        assert "test_index" in list_criteria()
        scores = channel_scores(make("resnet20"), X[:1], "test_index")
        assert keep_top(scores, {"conv1": 2})["conv1"] == [14, 15]
        with pytest.raises(ValueError, match="already taken"):

            @register_criterion
            class Other(Width):
                name = "test_index"
    finally:
        from autoprune.search.criteria import CRITERIA

        CRITERIA.unregister("test_index")


def test_a_criterion_giving_wrong_scores_is_caught() -> None:
    class Short(Criterion):
        name = "short"

        def __call__(self, group: tp.Group) -> Tensor:
            return torch.tensor([1.0, float("nan")])

    with pytest.raises(ValueError, match="criterion 'short' gave group 'conv1' scores of shape"):
        channel_scores(make("resnet20"), X[:1], Short())
