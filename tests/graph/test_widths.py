from __future__ import annotations

import pytest

from autoprune.graph import ChannelGroup, allowed_widths, narrowest_widths, snap_width


@pytest.mark.parametrize(
    ("channels", "expected"),
    [
        (20, [8, 16, 20]),  # multiples of 8 from the narrowest, plus the dense width
        (36, [8, 16, 24, 32, 36]),
        (64, [16, 24, 32, 40, 48, 56, 64]),
        (16, [8, 16]),  # 16 * 0.25 = 4 rounds up to one step, never below it
        (12, list(range(3, 13))),  # below round_min_channels: whole channels
        (2, [1, 2]),  # at least one channel
    ],
)
def test_allowed_widths_examples(channels: int, expected: list[int]) -> None:
    assert allowed_widths(channels, min_ratio=0.25, round_to=8) == expected


def test_allowed_widths_rounding_settings() -> None:
    assert allowed_widths(20, min_ratio=0.25, round_to=1) == list(range(5, 21))
    assert allowed_widths(20, min_ratio=0.25, round_to=8, round_min_channels=32) == list(range(5, 21))
    assert allowed_widths(100, min_ratio=0.5, round_to=16) == [48, 64, 80, 96, 100]
    assert allowed_widths(20, min_ratio=1.0) == [20] and allowed_widths(10, min_ratio=0.25) == list(
        range(3, 11)
    )
    for channels in range(1, 80):  # ascending, distinct, dense width last
        widths = allowed_widths(channels, min_ratio=0.3)
        assert widths == sorted(set(widths)) and widths[-1] == channels and widths[0] >= 1


def test_snap_width_takes_the_nearest_and_ties_go_up() -> None:
    grid = [8, 16, 20]
    assert [snap_width(w, grid) for w in (0, 8, 11.9, 12, 12.1, 17.9, 18, 19, 25)] == [
        8,
        8,
        8,
        16,
        16,
        16,
        20,
        20,
        20,
    ]
    assert snap_width(4.5, list(range(3, 13))) == 5


def test_narrowest_widths_are_the_first_allowed() -> None:
    groups = [ChannelGroup(n, c, ()) for n, c in [("a", 20), ("b", 36), ("c", 12)]]
    assert narrowest_widths(groups, min_ratio=0.25) == {"a": 8, "b": 8, "c": 3}
    assert narrowest_widths(groups, min_ratio=0.5, round_to=4) == {"a": 12, "b": 20, "c": 6}


def test_a_layer_pruning_emptied_is_named_as_such_not_as_a_width_the_code_fixes() -> None:
    import torch

    from autoprune.errors import ModelError
    from autoprune.graph import ChannelGraph
    from autoprune.graph._widths import _check_runs

    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.Flatten(), nn.LazyLinear(10)
    ).eval()
    x = torch.zeros(1, 3, 4, 4)
    model(x)
    graph = ChannelGraph(model, x)
    assert [g.name for g in graph.groups] == ["0", "2"]
    with torch.no_grad():  # what a mapping that sends every channel of layer 2 to the pruned set leaves
        model[2].weight = torch.nn.Parameter(model[2].weight[:0])
        model[2].bias = torch.nn.Parameter(model[2].bias[:0])
    with pytest.raises(ModelError) as info:
        _check_runs(model, x, graph, {"0": 8, "2": 2})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        "Torch-Pruning's channel mapping emptied layer '2' (Conv2d, weight of size [0, 8, 1, 1]) when "
        "pruning group '2' (RuntimeError"
    )
    model[2].weight = torch.nn.Parameter(torch.zeros(4, 8, 1, 1))
    model[2].bias = torch.nn.Parameter(torch.zeros(4))
    model[4] = torch.nn.Linear(32, 10)  # 16 features run into it: a width the model's code fixes
    with pytest.raises(ModelError, match="no longer runs once 2 groups are pruned"):
        _check_runs(model, x, graph, {"0": 4, "2": 1})
