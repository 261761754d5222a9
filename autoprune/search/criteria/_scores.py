"""The one entry point that scores a model's channels: computed once on the dense model, then reused
for every pruning of it (the search prunes the same dense model hundreds of times)."""

from __future__ import annotations

from torch import Tensor, nn

from autoprune.errors import ConfigError
from autoprune.graph import ChannelGraph
from autoprune.search.criteria._base import Batches, Criterion, get_criterion, untouched


def channel_scores(
    model: nn.Module, example_input: Tensor, criterion: str | Criterion, *, batches: Batches = ()
) -> dict[str, Tensor]:
    """Group name -> one finite score per channel (higher = keep), for every prunable group of ``model``.

    ``model`` comes back as it was: weights, BatchNorm statistics, gradients and each module's train/eval
    mode (the graph is traced and the criterion prepared in eval mode).
    """
    crit = get_criterion(criterion) if isinstance(criterion, str) else criterion
    if crit.needs_data and not batches:
        raise ConfigError(
            f"criterion '{crit.name}' needs calibration data: pass "
            "batches=autoprune.training.calibration_batches(dataset, count=4)"
        )
    scores: dict[str, Tensor] = {}
    with untouched(model):
        graph = ChannelGraph(model, example_input)
        crit.prepare(model, batches)
        for g in graph.groups:
            s = crit(graph.group(g.name)).detach().float().cpu()
            if s.shape != (g.channels,) or not bool(s.isfinite().all()):
                raise ValueError(
                    f"criterion '{crit.name}' gave group '{g.name}' scores of shape {tuple(s.shape)} "
                    f"(finite: {bool(s.isfinite().all())}); expected {g.channels} finite scores"
                )
            scores[g.name] = s
    return scores
