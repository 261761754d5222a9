"""The currency between stages: ``widths`` (group name -> kept channels) and how it is applied."""

from __future__ import annotations

import bisect
import copy
import math
from collections.abc import Mapping, Sequence

import torch
import torch_pruning as tp
from torch import Tensor, nn

from autoprune.errors import ConfigError, ModelError
from autoprune.graph._groups import ChannelGraph, ChannelGroup, Criterion, Widths


def dense_widths(groups: Sequence[ChannelGroup]) -> Widths:
    return {g.name: g.channels for g in groups}


def allowed_widths(
    channels: int, *, min_ratio: float, round_to: int = 8, round_min_channels: int = 16
) -> list[int]:
    """Every width a group of ``channels`` may take, ascending: the one grid the profile sampler, the
    lookup table and the search share, so the predictor is only asked about widths that were measured.

    Groups of >= ``round_min_channels`` take multiples of ``round_to`` (fast kernels), from the one
    nearest ``min_ratio * channels`` (never below ``round_to``), plus ``channels`` itself: the dense width
    is always allowed. Smaller groups take whole channels from ``min_ratio * channels`` (at least 1).
    Halves round up in both cases.
    """
    lowest = channels * min_ratio
    if channels >= round_min_channels and round_to > 1:
        low = min(channels, max(round_to, round_to * math.floor(lowest / round_to + 0.5)))
        return sorted({*range(low, channels + 1, round_to), channels})
    return list(range(min(channels, max(1, math.floor(lowest + 0.5))), channels + 1))


def snap_width(width: float, choices: Sequence[int]) -> int:
    """The allowed width (``choices``, ascending) nearest ``width``; a tie goes to the wider one."""
    if not choices:
        raise ValueError("snap_width needs at least one allowed width")
    i = bisect.bisect_left(choices, width)
    if i == 0:
        return int(choices[0])
    if i == len(choices):
        return int(choices[-1])
    below, above = choices[i - 1], choices[i]
    return int(above if above - width <= width - below else below)


def narrowest_widths(
    groups: Sequence[ChannelGroup], *, min_ratio: float, round_to: int = 8, round_min_channels: int = 16
) -> Widths:
    """The smallest network the search may choose: every group at its narrowest allowed width."""
    return {
        g.name: allowed_widths(
            g.channels, min_ratio=min_ratio, round_to=round_to, round_min_channels=round_min_channels
        )[0]
        for g in groups
    }


def check_widths(groups: Sequence[ChannelGroup], widths: Mapping[str, int]) -> Widths:
    """Validate a widths dict against the groups; groups it omits stay dense."""
    by_name = {g.name: g for g in groups}
    unknown = sorted(set(widths) - set(by_name))
    if unknown:
        raise ConfigError(f"widths name unknown groups {unknown}: valid names are {sorted(by_name)}")
    out = dense_widths(groups)
    for name, w in widths.items():
        if not 1 <= int(w) <= by_name[name].channels:
            raise ConfigError(f"width {w} for group '{name}' is outside 1..{by_name[name].channels}")
        out[name] = int(w)
    return out


def keep_top(scores: Mapping[str, Tensor], widths: Mapping[str, int]) -> dict[str, list[int]]:
    """Per group, the indices of the ``widths[name]`` highest-scoring channels, ascending."""
    return {
        name: sorted(torch.topk(scores[name], w).indices.tolist())
        if w < len(scores[name])
        else list(range(len(scores[name])))
        for name, w in widths.items()
    }


def apply_widths(
    model: nn.Module,
    example_input: Tensor,
    widths: Mapping[str, int],
    *,
    criterion: Criterion | None = None,
    keep: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, list[int]]:
    """Prune ``model`` in place to ``widths``; return the kept channel indices per group.

    Channels are chosen by ``keep`` when given (to rebuild a saved network), else by ``criterion``
    (highest scores kept), else the first ones: for latency alone, which channels survive is irrelevant.
    """
    graph = ChannelGraph(model, example_input)
    full = check_widths(graph.groups, widths)
    if keep is None:
        if criterion is None:
            keep = {name: list(range(w)) for name, w in full.items()}
        else:
            keep = keep_top(graph.scores(criterion), full)
    kept = {name: sorted(int(i) for i in idx) for name, idx in keep.items()}
    for name, idx in kept.items():
        if len(idx) != full.get(name, -1):
            raise ConfigError(f"group '{name}': {len(idx)} kept indices for width {full.get(name)}")
    graph.prune(kept)
    _check_runs(model, example_input, graph, full)
    return kept


def _check_runs(
    model: nn.Module, example_input: Tensor, graph: ChannelGraph, widths: Mapping[str, int]
) -> None:
    """Run the pruned ``model`` once: a model whose code fixes a width (a reshape to a stored channel
    count, as torchvision's ViT does with its hidden size) fails here, with the group to blame named."""
    done: list[str] = []
    names = {m: n for n, m in model.named_modules()}
    hooks = [
        m.register_forward_hook(lambda mod, _i, _o: done.append(names[mod]))
        for m in model.modules()
        if not any(True for _ in m.children())
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input)
    except Exception as exc:
        last = done[-1] if done else None
        pruned = [g for g in graph.groups if widths.get(g.name, g.channels) < g.channels]
        detail = " ".join(str(exc).split())[:120]
        empty = _emptied_layer(model)
        if empty is not None:  # Torch-Pruning removed every channel of a layer: not the model's code
            layer, kind = empty
            blamed = next((g.name for g in pruned if layer in g.members), None)
            group = f"group '{blamed}'" if blamed else f"{len(pruned)} group{'s' if len(pruned) != 1 else ''}"
            raise ModelError(
                f"Torch-Pruning's channel mapping emptied layer '{layer}' ({kind}) when pruning {group} "
                f"({type(exc).__name__}: {detail}): the model couples those channels in a way Torch-Pruning "
                "does not map; leave that group dense (omit it from the widths)"
            ) from exc
        blamed = next((g.name for g in pruned if last in g.members), None)
        after = f" right after layer '{last}'" if last else ""
        group = (
            f"group '{blamed}' is"
            if blamed
            else f"{len(pruned)} group{'s are' if len(pruned) != 1 else ' is'}"
        )
        raise ModelError(
            f"the model no longer runs once {group} pruned ({type(exc).__name__}{after}: {detail}): its "
            "code fixes that width (e.g. a reshape to a stored channel count), so autoprune cannot prune it; "
            "use a model whose forward reads widths from its tensors"
        ) from exc
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()


def _emptied_layer(model: nn.Module) -> tuple[str, str] | None:
    """The first layer whose weight has no channel left (a dimension of size 0), if any: its name and
    "Conv2d, weight of size [0, 4, 1, 1]"."""
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, Tensor) and weight.dim() > 0 and 0 in weight.shape:
            return name, f"{type(module).__name__}, weight of size {list(weight.shape)}"
    return None


def pruned_copy(
    model: nn.Module,
    example_input: Tensor,
    widths: Mapping[str, int],
    *,
    criterion: Criterion | None = None,
) -> tuple[nn.Module, dict[str, list[int]]]:
    """A pruned copy of ``model`` in eval mode (``model`` is untouched) and its kept indices."""
    module = copy.deepcopy(model).eval()
    return module, apply_widths(module, example_input, widths, criterion=criterion)


def measure_widths(model: nn.Module, example_input: Tensor) -> Widths:
    """The current width of each group of ``model`` (after pruning, names are unchanged)."""
    return {g.name: g.channels for g in ChannelGraph(model, example_input).groups}


def count_macs_params(model: nn.Module, example_input: Tensor) -> tuple[int, int]:
    """Multiply-accumulates and parameters of one forward pass (Torch-Pruning's counter)."""
    was_training = model.training
    model.eval()
    macs, params = tp.utils.count_ops_and_params(model, example_input)
    model.train(was_training)
    return int(macs), int(params)
