from __future__ import annotations

import copy
import itertools

import pytest
import torch

from autoprune.errors import ConfigError, ModelError
from autoprune.graph import (
    ChannelGraph,
    apply_widths,
    check_widths,
    measure_widths,
    narrowest_widths,
    pruned_copy,
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


class _GroupedBlock(torch.nn.Module):
    """conv -> BN -> grouped conv (4 groups, not depthwise) -> conv: a ResNeXt / RegNet bottleneck."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(3, 16, 1)
        self.bn = torch.nn.BatchNorm2d(16)
        self.b = torch.nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.c = torch.nn.Conv2d(16, 24, 1)
        self.head = torch.nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c(self.b(torch.relu(self.bn(self.a(x)))))
        return self.head(y.mean((2, 3)))


@pytest.mark.parametrize("spec", ["grouped", "torchvision:regnet_x_400mf", "torchvision:resnext50_32x4d"])
def test_channels_a_grouped_convolution_produces_or_reads_stay_dense_and_pruning_runs(spec: str) -> None:
    model = _GroupedBlock().eval() if spec == "grouped" else create_model(spec, num_classes=10).eval()
    example = torch.randn(1, 3, 32, 32)
    groups = ChannelGraph(copy.deepcopy(model), example).groups
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    grouped = {n for n, m in convs if 1 < m.groups < m.out_channels}
    assert grouped and not any(set(g.members) & grouped for g in groups)
    if spec == "grouped":
        assert [g.members for g in groups] == [("c",)]  # a feeds the grouped conv b: dense
    widths = {g.name: max(1, g.channels // 2 - 1) for g in groups}  # odd: no multiple of any group count
    pruned, _ = pruned_copy(model, example, widths)
    assert pruned(example).shape == (1, 10)
    assert measure_widths(pruned, example) == widths


def test_a_model_torch_pruning_cannot_map_is_refused_with_one_line_naming_the_layer() -> None:
    # ShuffleNet's channel shuffle (view -> transpose -> view of the channel axis) breaks Torch-Pruning's
    # index mapping (a ZeroDivisionError inside it): refused when the graph is built, before any work.
    model = create_model("torchvision:shufflenet_v2_x0_5").eval()
    with pytest.raises(ModelError) as info:
        ChannelGraph(model, torch.zeros(1, 3, 64, 64))
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert "Torch-Pruning cannot map" in message and "ViewBackward0" in message
    layer = message.split("after layer '")[1].split("'")[0]
    assert layer in dict(model.named_modules())  # a real layer of the model, next to the failing op


def test_a_model_with_no_prunable_group_is_refused() -> None:
    # Only the classifier (never pruned) and a grouped convolution (left dense): nothing to shrink.
    model = torch.nn.Sequential(
        torch.nn.Conv2d(4, 8, 3, groups=2), torch.nn.Flatten(), torch.nn.LazyLinear(10)
    ).eval()
    x = torch.zeros(1, 4, 8, 8)
    model(x)
    with pytest.raises(ModelError, match=r"no prunable channel group .* classifier '2'"):
        ChannelGraph(model, x)


@pytest.mark.parametrize("name", ["vit_b_32", "swin_t", "swin_v2_t", "maxvit_t"])
def test_self_attention_is_refused_before_tracing_naming_the_layer(name: str) -> None:
    import torchvision

    model = torchvision.models.get_model(name, num_classes=10)
    with pytest.raises(ModelError, match=r"layer '[\w.]+' \(\w+\) is a self-attention layer") as info:
        ChannelGraph(model, torch.zeros(1, 3, 224, 224))
    assert len(str(info.value).splitlines()) == 1


def test_a_convolutional_attention_block_is_not_taken_for_self_attention() -> None:
    class ChannelAttention(torch.nn.Module):  # CBAM-style: a gate on the channels, no query/key/value
        def __init__(self, c: int) -> None:
            super().__init__()
            nn = torch.nn
            self.fc = nn.Sequential(nn.Linear(c, c // 2), nn.ReLU(), nn.Linear(c // 2, c))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * torch.sigmoid(self.fc(x.mean((2, 3))))[:, :, None, None]

    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), ChannelAttention(8), torch.nn.Conv2d(8, 8, 3), torch.nn.Flatten(),
        torch.nn.LazyLinear(10),
    ).eval()  # fmt: skip
    x = torch.zeros(1, 3, 12, 12)
    model(x)
    assert ChannelGraph(model, x).groups


def test_profile_refuses_an_unmappable_model_at_the_start(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from autoprune.cli import main

    out = tmp_path / "p.parquet"
    code = main(
        ["profile", "torchvision:shufflenet_v2_x0_5", "--input-shape", "1x3x64x64", "--out", str(out)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Torch-Pruning cannot map" in err, err
    assert list(tmp_path.iterdir()) == []


class _FixedWidth(torch.nn.Module):
    """Patch embedding reshaped to a stored channel count, as torchvision's ViT does with hidden_dim."""

    def __init__(self) -> None:
        super().__init__()
        self.width = 16
        self.proj = torch.nn.Conv2d(3, 16, 4, stride=4)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16))
        self.head = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        t = self.proj(x).reshape(n, self.width, (h // 4) * (w // 4)).permute(0, 2, 1)
        t = t + self.mlp(t)
        return self.head(t.mean(1))


def test_pruning_a_width_the_models_code_fixes_is_refused_naming_the_group() -> None:
    model, x = _FixedWidth().eval(), torch.zeros(1, 3, 16, 16)
    groups = {g.name: g.channels for g in ChannelGraph(model, x).groups}
    assert groups == {"proj": 16, "mlp.0": 32}
    with pytest.raises(ModelError) as info:
        pruned_copy(model, x, {"proj": 8})
    assert "group 'proj' is pruned" in str(info.value) and "\n" not in str(info.value)
    pruned, _ = pruned_copy(model, x, {"mlp.0": 8})  # the other group prunes and runs
    assert pruned(x).shape == (1, 10)


class _SplitReadTwice(torch.nn.Module):
    """A channel split whose first chunk two ops read (a conv and an add): Torch-Pruning gives the split
    one chunk per reading op (offsets 0, 4, 8, 12 for two chunks of 4), and the code fixes the chunk size."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(3, 8, 1)
        self.b = torch.nn.Conv2d(4, 4, 1)
        self.c = torch.nn.Conv2d(4, 4, 1)
        self.d = torch.nn.Conv2d(8, 6, 1)
        self.head = torch.nn.Linear(6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = torch.split(self.a(x), 4, dim=1)
        y = torch.cat([self.b(x1) + x1, self.c(x2)], dim=1)
        return self.head(self.d(y).mean((2, 3)))


def test_groups_through_a_channel_split_stay_dense_and_the_rest_prunes_and_scores() -> None:
    model, x = _SplitReadTwice().eval(), torch.randn(1, 3, 8, 8)
    graph = ChannelGraph(copy.deepcopy(model), x)
    names = {g.name for g in graph.groups}
    assert "a" not in names and "b" not in names  # a's channels, and b's added to a's first chunk: dense
    assert "d" in names
    scores = graph.scores(get_criterion("l1"))  # scoring ran past a layer before (IndexError)
    assert all(len(scores[g.name]) == g.channels for g in graph.groups)
    widths = {g.name: max(1, g.channels // 2) for g in graph.groups}
    pruned, _ = pruned_copy(model, x, widths, criterion=get_criterion("l1"))
    assert pruned(x).shape == (1, 10) and measure_widths(pruned, x) == widths


class _CatOfSlices(torch.nn.Module):
    """RexNet's block: ``cat([y[:, :C] + x, y[:, C:]])`` with ``y = bn(conv(x))`` widening ``x``, four in a
    row: Torch-Pruning's group search re-walks a layer for each new subset of its channels and does not
    end (three blocks take 0.02 s, four run for more than 300 s)."""

    def __init__(self, widths: tuple[int, ...] = (8, 12, 16, 20, 24)) -> None:
        super().__init__()
        self.widths = list(widths)
        self.stem = torch.nn.Conv2d(3, widths[0], 1)
        self.convs = torch.nn.ModuleList(torch.nn.Conv2d(a, b, 1) for a, b in itertools.pairwise(widths))
        self.bns = torch.nn.ModuleList(torch.nn.BatchNorm2d(b) for b in widths[1:])
        self.head = torch.nn.Sequential(
            torch.nn.Linear(widths[-1], 16), torch.nn.ReLU(), torch.nn.Linear(16, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for c, conv, bn in zip(self.widths[:-1], self.convs, self.bns, strict=True):
            y = bn(conv(x))
            x = torch.cat([y[:, :c] + x, y[:, c:]], dim=1)
        return self.head(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_a_group_search_that_does_not_end_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from autoprune.graph import _groups

    monkeypatch.setattr(_groups, "GROUP_SEARCH_SECONDS", 2.0)
    with pytest.raises(ModelError, match="did not finish within 2 s") as info:
        ChannelGraph(_CatOfSlices().eval(), torch.randn(1, 3, 8, 8))
    assert "\n" not in str(info.value)
    monkeypatch.undo()  # the default limit: the check below must not depend on the host's speed
    graph = ChannelGraph(_CatOfSlices((8, 12, 16)).eval(), torch.randn(1, 3, 8, 8))  # two blocks: it ends
    assert graph.groups
