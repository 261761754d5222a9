from __future__ import annotations

import torch

from autoprune.graph import ChannelGraph, measure_widths, narrowest_widths
from autoprune.models import create_model
from autoprune.prune import load_pruned, prune_model, save_pruned


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
