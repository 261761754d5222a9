"""Channel groups over Torch-Pruning's DependencyGraph, with names that are stable across runs.

A *group* is a set of coupled channels that must be pruned together (a residual add couples the convs
that feed it). Its name is the qualified name of the first module, in ``model.named_modules()`` order,
whose output channels belong to the group: it does not depend on the graph's traversal order.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import Tensor, nn

from autoprune.errors import AutopruneError, ConfigError, ModelError

Widths = dict[str, int]
Criterion = Callable[[tp.Group], Tensor]
"""An importance criterion scores a group's channels: ``criterion(group) -> Tensor[channels]``."""


@dataclass(frozen=True)
class ChannelGroup:
    name: str
    channels: int
    members: tuple[str, ...]  # modules whose output channels are pruned with the group


class ChannelGraph:
    """The prunable channel groups of ``model`` (traced once on ``example_input``, in eval mode: the
    model's weights and BatchNorm statistics are left as they were).

    The classifier (the last Conv/Linear run in the forward pass) keeps its outputs, and the network
    input is never a group. Channels that a grouped (non-depthwise) convolution produces or reads are
    left unpruned.
    """

    def __init__(self, model: nn.Module, example_input: Tensor) -> None:
        self.model = model
        names = {module: name for name, module in model.named_modules()}
        order = {name: i for i, name in enumerate(names.values())}
        _refuse_attention(model)
        modes = [(m, m.training) for m in model.modules()]
        model.eval()  # tracing runs the model: in train mode it would move BatchNorm's running statistics
        try:
            classifier = _last_layer(model, example_input)
            with torch.enable_grad():  # the graph is traced through autograd
                self.dg = tp.DependencyGraph().build_dependency(
                    model, example_inputs=example_input, verbose=False
                )
            with _group_search_limit(GROUP_SEARCH_SECONDS):
                all_groups = list(self.dg.get_all_groups(ignored_layers=[classifier]))
        except AutopruneError:
            raise
        except Exception as exc:  # Torch-Pruning could not map some op: refuse now, not mid-search
            raise ModelError(_untraceable(exc, names)) from exc
        finally:
            for m, training in modes:
                m.training = training
        found: list[tuple[ChannelGroup, nn.Module, Callable[..., object]]] = []
        for group in all_groups:
            outs = [dep.target.module for dep, _ in group if self.dg.is_out_channel_pruning_fn(dep.handler)]
            # A grouped (non-depthwise) convolution anywhere in the group, producing its channels or
            # reading them, splits them into fixed blocks that Torch-Pruning does not keep consistent
            # here; a split of the channel axis keeps its sizes in the model's code (and Torch-Pruning
            # maps one chunk per op that reads the split, not one per chunk): the group stays dense.
            if any(_is_grouped_conv(dep.target.module) or _splits_channels(dep.target) for dep, _ in group):
                continue
            members = tuple(sorted({names[m] for m in outs if m in names}, key=order.__getitem__))
            root = group[0].dep
            channels = self.dg.get_out_channels(root.target.module)
            found.append((ChannelGroup(members[0], channels, members), root.target.module, root.handler))
        if not found:
            raise ModelError(
                f"the model has no prunable channel group (all {len(all_groups)} groups Torch-Pruning found "
                f"end in the classifier '{names.get(classifier, '?')}', touch a grouped convolution or pass "
                "through a split of the channel axis): autoprune cannot shrink it; use a model with ordinary "
                "convolutions or linear layers"
            )
        found.sort(key=lambda item: order[item[0].name])
        self.groups: list[ChannelGroup] = [g for g, _, _ in found]
        self._roots = {g.name: (module, handler) for g, module, handler in found}

    def group(self, name: str) -> tp.Group:
        """The full Torch-Pruning group (all channels), e.g. for an importance criterion."""
        module, handler = self._roots[name]
        return self.dg.get_pruning_group(module, handler, list(range(self.dg.get_out_channels(module))))

    def scores(self, criterion: Criterion) -> dict[str, Tensor]:
        """Score every group's channels with ``criterion`` before any channel is removed."""
        return {g.name: criterion(self.group(g.name)).detach().cpu() for g in self.groups}

    def prune(self, keep: Mapping[str, Sequence[int]]) -> None:
        """Physically remove, in place, every channel of each named group that is not in ``keep``."""
        unknown = set(keep) - set(self._roots)
        if unknown:
            raise ConfigError(f"unknown channel groups {sorted(unknown)}: use names from the model's groups")
        for g in self.groups:
            if g.name not in keep:
                continue
            kept = set(keep[g.name])
            if not kept or not kept <= set(range(g.channels)):
                raise ConfigError(f"group '{g.name}' must keep 1..{g.channels} of its channel indices")
            remove = [i for i in range(g.channels) if i not in kept]
            if remove:
                module, handler = self._roots[g.name]
                self.dg.get_pruning_group(module, handler, remove).prune()


def _refuse_attention(model: nn.Module) -> None:
    """Refuse, before any tracing, a self-attention layer: its query, key and value projections split
    channels into heads, which Torch-Pruning maps only with per-model head settings autoprune does not
    pass (tracing Swin or MaxViT without them runs out of memory after minutes; ViT's code fixes its
    width). A self-attention layer: ``nn.MultiheadAttention``, or a module named ``...Attention...`` holding
    a linear layer to three times its input width (a fused query-key-value projection)."""
    for name, module in model.named_modules():
        fused = "Attention" in type(module).__name__ and any(
            isinstance(m, nn.Linear) and m.out_features == 3 * m.in_features for m in module.modules()
        )
        if isinstance(module, nn.MultiheadAttention) or fused:
            raise ModelError(
                f"layer '{name}' ({type(module).__name__}) is a self-attention layer: autoprune prunes the "
                "channels of convolutional networks and cannot prune attention heads (ViT, Swin, MaxViT); "
                "use a convolutional network"
            )


def _untraceable(exc: Exception, names: Mapping[nn.Module, str]) -> str:
    """One line for a model Torch-Pruning cannot map: the op it failed on (found in the traceback) and
    the nearest layer that feeds it, since ops such as a reshape have no name of their own."""
    node = None
    tb = exc.__traceback__
    while tb is not None:  # the innermost graph node any Torch-Pruning frame was working on
        for value in list(tb.tb_frame.f_locals.values()):
            if isinstance(value, tp.dependency.Node):
                node = value
                break
        tb = tb.tb_next
    where = ""
    if node is not None:
        op = type(node.grad_fn).__name__ if node.grad_fn is not None else type(node.module).__name__
        layer = names.get(node.module)
        if layer is None:  # walk back to the nearest named layer that feeds it
            seen, queue = {id(node)}, list(node.inputs)
            while queue and layer is None:
                n = queue.pop(0)
                layer = names.get(n.module)
                queue += [i for i in n.inputs if id(i) not in seen]
                seen.update(id(i) for i in n.inputs)
            where = f" at its {op} op" + (f" after layer '{layer}'" if layer else "")
        else:
            where = f" at layer '{layer}' ({op})"
    detail = " ".join(str(exc).split())[:120]
    return (
        f"Torch-Pruning cannot map this model's channels{where} ({type(exc).__name__}: {detail}): autoprune "
        "cannot prune it; use a model without that op (e.g. a channel shuffle or reshape of the channel "
        "axis), or pass a model file that replaces it"
    )


GROUP_SEARCH_SECONDS = 120.0


@contextlib.contextmanager
def _group_search_limit(seconds: float) -> Iterator[None]:
    """Refuse, in one line, a model whose Torch-Pruning group search runs past ``seconds``: it re-walks a
    layer for every new subset of its channels that reaches it, which does not end on chains of
    ``cat([y[:, :C] + x, y[:, C:]])`` (RexNet). A timer signal, so only where one can be set (the main
    thread of a POSIX process); elsewhere no limit."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(_signum: int, _frame: object) -> None:
        raise ModelError(
            f"Torch-Pruning's channel-group search did not finish within {seconds:g} s on this model (it "
            "re-walks layers whose channels are sliced and concatenated again, as RexNet's "
            "cat([y[:, :C] + x, y[:, C:]]) does): autoprune cannot prune it; use a model without that pattern"
        )

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _is_grouped_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.conv._ConvNd) and 1 < module.groups < module.out_channels


def _splits_channels(node: object) -> bool:
    """Whether a Torch-Pruning node is a split, chunk or unbind of a channel axis: dimension 1 (NCHW, NC)
    or the last one (NHWC, NLC), or one the autograd graph does not record."""
    if not isinstance(getattr(node, "module", None), (tp.ops._SplitOp, tp.ops._UnbindOp)):
        return False
    grad_fn = getattr(node, "grad_fn", None)
    sizes, dim = getattr(grad_fn, "_saved_self_sym_sizes", None), getattr(grad_fn, "_saved_dim", None)
    if sizes is None or dim is None or not -len(sizes) <= dim < len(sizes):
        return True
    return dim % len(sizes) in {1, len(sizes) - 1}


def _last_layer(model: nn.Module, example_input: Tensor) -> nn.Module:
    """The last Conv/Linear executed in a forward pass: it produces the logits, so it is never pruned."""
    seen: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda mod, _i, _o: seen.append(mod))
        for m in model.modules()
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))
    ]
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for h in hooks:
            h.remove()
    if not seen:
        raise ConfigError("the model has no Conv or Linear layer: autoprune prunes CNN channels")
    return seen[-1]
