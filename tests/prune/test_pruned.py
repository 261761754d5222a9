from __future__ import annotations

import pytest
import torch

from autoprune.errors import ConfigError
from autoprune.graph import ChannelGraph, measure_widths, narrowest_widths
from autoprune.models import create_model
from autoprune.prune import load_pruned, prune_model, save_pruned
from autoprune.search import channel_scores, get_criterion


def test_saved_pruned_model_reloads_without_search(tmp_path) -> None:  # type: ignore[no-untyped-def]
    dense = create_model("mobilenet_v2").eval()
    x = torch.randn(2, 3, 32, 32)
    widths = narrowest_widths(ChannelGraph(create_model("mobilenet_v2"), x[:1]).groups, min_ratio=0.4)
    pruned = prune_model(
        dense, widths=widths, model_spec="mobilenet_v2", num_classes=10, input_shape=[1, 3, 32, 32]
    )
    save_pruned(tmp_path / "pruned.pt", pruned)
    torch.load(tmp_path / "pruned.pt", weights_only=True)  # no pickled code in the file
    again = load_pruned(tmp_path / "pruned.pt")
    assert again.widths == widths and again.keep == pruned.keep
    assert measure_widths(again.module, x[:1]) == widths
    torch.testing.assert_close(again.module(x), pruned.module(x))
    assert sum(p.numel() for p in again.module.parameters()) < sum(p.numel() for p in dense.parameters())


def test_given_scores_choose_the_kept_channels() -> None:
    dense = create_model("resnet20").eval()
    example = torch.zeros(1, 3, 32, 32)
    scores = channel_scores(dense, example, "l1")
    scores["layer1.0.conv1"] = torch.arange(16.0)  # the last channels score highest
    pruned = prune_model(
        dense,
        widths={"layer1.0.conv1": 4},
        model_spec="resnet20",
        num_classes=10,
        input_shape=[1, 3, 32, 32],
        scores=scores,
    )
    assert pruned.keep["layer1.0.conv1"] == [12, 13, 14, 15]
    assert pruned.widths["conv1"] == 16 and len(pruned.keep) == len(scores)  # unnamed groups stay dense
    kept = pruned.module.layer1[0].conv1.weight
    torch.testing.assert_close(kept, dense.layer1[0].conv1.weight[12:])


def test_without_scores_the_criterion_scores_and_its_name_is_saved(tmp_path) -> None:  # type: ignore[no-untyped-def]
    dense = create_model("resnet20").eval()
    widths = narrowest_widths(
        ChannelGraph(create_model("resnet20"), torch.zeros(1, 3, 32, 32)).groups, min_ratio=0.5
    )
    kwargs = {"widths": widths, "model_spec": "resnet20", "num_classes": 10, "input_shape": [1, 3, 32, 32]}
    by_name = prune_model(dense, criterion="l1", **kwargs)  # type: ignore[arg-type]
    scores = channel_scores(dense, torch.zeros(1, 3, 32, 32), "l1")
    assert by_name.keep == prune_model(dense, scores=scores, **kwargs).keep  # type: ignore[arg-type]
    seeded = prune_model(dense, criterion=get_criterion("random", seed=3), **kwargs)  # type: ignore[arg-type]
    save_pruned(tmp_path / "p.pt", seeded)
    assert load_pruned(tmp_path / "p.pt").criterion == "random"
    assert seeded.keep != by_name.keep


def test_data_criteria_need_batches_and_scores_must_cover_the_widths() -> None:
    dense = create_model("resnet20").eval()
    kwargs = {
        "widths": {"conv1": 8},
        "model_spec": "resnet20",
        "num_classes": 10,
        "input_shape": [1, 3, 32, 32],
    }
    with pytest.raises(ConfigError, match="needs calibration data"):
        prune_model(dense, criterion="taylor", **kwargs)  # type: ignore[arg-type]
    batches = [(torch.randn(4, 3, 32, 32), torch.arange(4))]
    assert prune_model(dense, criterion="taylor", batches=batches, **kwargs).widths["conv1"] == 8  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"widths name groups \['conv1'\] that have no scores"):
        prune_model(dense, scores={"fc": torch.ones(10)}, **kwargs)  # type: ignore[arg-type]
