"""STAMP's meta-training over class subsets of the reference data, and its adaptation to a target.

Meta-training (``meta_train``): each episode draws a random subset of the reference classes, a set of
``set_size`` of their training images (the set the generator reads) and a disjoint query batch of
``query_size``. The generator's scores gate the network (``GatedNetwork``: hard 0/1, straight-through);
the loss is the cross-entropy on the query restricted to the subset's classes (the other logits are left
out) plus the latency loss of the open channels through the differentiable predictor (``latency_loss``).
Only the generator trains: the network's weights stay frozen, but BatchNorm normalises with the batch's
statistics (``BATCH_STATS``), as the pruned network will after its recalibration: with the dense
network's running statistics a heavily gated network scores at chance and its loss says nothing about
which channels matter (digits, 40 % of the channels: query loss ln 3 on 3 classes). The running
statistics are restored afterwards. This is first-order and single-level (no MAML inner loop):
the generator learns to map a task's set to a mask, and the adaptation's few steps do the rest.

Adaptation (``adapt_mask``): one pass of the generator on a set of the target's images, then
``adapt_steps`` gradient steps on the generator with the target's loss and the latency loss; the scores
are put on the width grid under the budget (``gate_widths``) and the highest-scored channels kept. A
target with other classes gets a new classifier first (``replace_classifier``), fit on the dense
network's frozen features (``fit_classifier``: a linear probe).

The optimiser is SGD with momentum, each gradient tensor clipped alone, as the W-Gates' gates train:
Adam's per-parameter scaling would erase how much latency each group costs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from autoprune.adapt.stamp._generator import MaskGenerator
from autoprune.config import StampKnobs
from autoprune.errors import ConfigError, DataError
from autoprune.graph import Widths, keep_top
from autoprune.search.allocation import gate_widths
from autoprune.search.gating import GatedNetwork, LatencyOfFractions, latency_loss
from autoprune.search.space import WidthSpace

Step = Callable[[int, int], None]
BATCH_STATS = True


@dataclass(frozen=True)
class StampSettings(StampKnobs):
    """The knobs of ``StampKnobs`` (what ``autoprune adapt`` sets) and the mask generator's widths
    (``hidden``, ``embed``)."""

    hidden: int = 64
    embed: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden < 1 or self.embed < 1:
            raise ConfigError(f"hidden and embed must be >= 1: {self}")


@dataclass
class AdaptedMask:
    """The adapted network on the grid: ``widths``, the scores whose highest ``widths`` channels it keeps
    (``keep``), the generator's own open channels per group and their predicted latency before rounding."""

    widths: Widths
    keep: dict[str, list[int]]
    scores: dict[str, Tensor]
    counts: dict[str, int]
    latency_ms: float


# -- the network's features and classifier -------------------------------------------------------------
def classifier(net: nn.Module) -> tuple[str, nn.Linear]:
    """The network's last linear layer (its classifier) and its name."""
    last = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ConfigError(
            "STAMP reads the input of the network's last linear layer (its classifier), and this network "
            "has none: use a model that ends in nn.Linear"
        )
    return last[-1]


@torch.no_grad()
def penultimate(net: nn.Module, x: Tensor, *, batch: int = 256) -> Tensor:
    """(N, features) inputs of the classifier for images ``x`` (N, C, H, W), ``net`` in eval mode."""
    _, head = classifier(net)
    seen: list[Tensor] = []
    hook = head.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0].detach().flatten(1)))
    was = net.training
    try:
        net.eval()
        for start in range(0, len(x), batch):
            net(x[start : start + batch])
    finally:
        hook.remove()
        net.train(was)
    return torch.cat(seen)


def replace_classifier(net: nn.Module, num_classes: int, *, seed: int = 0) -> nn.Module:
    """Put a new classifier of ``num_classes`` outputs in place of the last linear layer (in place)."""
    name, head = classifier(net)
    parent = net.get_submodule(name.rpartition(".")[0]) if "." in name else net
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        setattr(
            parent, name.rpartition(".")[2], nn.Linear(head.in_features, num_classes, head.bias is not None)
        )
    return net


def fit_classifier(
    net: nn.Module, dataset: Dataset, *, samples: int = 2048, steps: int = 300, seed: int = 0
) -> None:
    """A linear probe: train only the classifier, on the dense network's features of (up to ``samples``)
    training images, full batch with Adam (the features are fixed: a convex problem)."""
    x, y = _stack(dataset, _sample(len(dataset), samples, seed))  # type: ignore[arg-type]
    feats = penultimate(net, x)
    _, head = classifier(net)
    opt = torch.optim.Adam(head.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(head(feats), y).backward()
        opt.step()


# -- meta-training --------------------------------------------------------------------------------------
def new_generator(
    net: nn.Module,
    example: Tensor,
    space: WidthSpace,
    reference: Dataset,
    *,
    importance: dict[str, Tensor],
    start: Widths,
    settings: StampSettings,
) -> MaskGenerator:
    """A generator at the magnitude criterion's mask of ``start``'s widths, its features standardised by
    a sample of the reference's."""
    x, _ = _stack(reference, _sample(len(reference), 1024, settings.seed))  # type: ignore[arg-type]
    feats = penultimate(net, x)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        return MaskGenerator(
            space.groups, importance, feature_mean=feats.mean(0), feature_std=feats.std(0),
            open_init=start, hidden=settings.hidden, embed=settings.embed,
        )  # fmt: skip


def meta_train(
    generator: MaskGenerator,
    net: nn.Module,
    example: Tensor,
    space: WidthSpace,
    reference: Dataset,
    *,
    latency: LatencyOfFractions,
    budget_ms: float,
    settings: StampSettings,
    on_step: Step | None = None,
) -> list[tuple[float, float]]:
    """Meta-train ``generator`` (in place) over random class subsets of ``reference`` (see the module's
    docstring); ``net`` is left as it was. Returns each episode's (query loss, predicted ms)."""
    labels = _labels(reference)
    classes = np.unique(labels)
    k = settings.subset_classes or max(2, len(classes) // 2)
    if k > len(classes):
        raise ConfigError(
            f"--subset-classes {k} exceeds the reference data's {len(classes)} classes: "
            f"pass at most {len(classes)}"
        )
    by_class = {int(c): np.flatnonzero(labels == c) for c in classes}
    rng = np.random.default_rng(settings.seed)
    gated, frozen, step = _gate(generator, net, example, space, latency, budget_ms, settings)
    trace: list[tuple[float, float]] = []
    for i in range(settings.meta_steps):
        subset = np.sort(rng.choice(classes, size=k, replace=False))
        pool = rng.permutation(np.concatenate([by_class[int(c)] for c in subset]))
        support, query = pool[: settings.set_size], pool[settings.set_size :][: settings.query_size]
        if len(query) == 0:
            query = support  # a tiny subset: read and score the same images
        xs, _ = _stack(reference, support)
        xq, yq = _stack(reference, query)
        remap = torch.full((int(classes.max()) + 1,), -1, dtype=torch.long)
        remap[torch.as_tensor(subset)] = torch.arange(k)
        scores = generator(penultimate(frozen, xs))
        logits = gated(xq, scores)[:, torch.as_tensor(subset)]  # (Q, k): the subset's classes only
        trace.append(step(F.cross_entropy(logits, remap[yq])))
        if on_step is not None:
            on_step(i + 1, settings.meta_steps)
    gated.remove()
    _unfreeze(net, frozen)
    return trace


# -- adaptation -------------------------------------------------------------------------------------------
def adapt_mask(
    generator: MaskGenerator,
    net: nn.Module,
    example: Tensor,
    space: WidthSpace,
    target: Dataset,
    *,
    latency: LatencyOfFractions,
    budget_ms: float,
    settings: StampSettings,
    on_step: Step | None = None,
) -> AdaptedMask:
    """Adapt ``generator`` (in place) to ``target`` with ``settings.adapt_steps`` steps and return its
    network on the grid under the predicted budget. ``net``'s classifier must already fit the target."""
    xs, _ = _stack(target, _sample(len(target), settings.set_size, settings.seed))  # type: ignore[arg-type]
    gated, frozen, step = _gate(generator, net, example, space, latency, budget_ms, settings)
    feats = penultimate(frozen, xs)  # one set, read once: the task's encoding
    loader = DataLoader(
        target, batch_size=settings.query_size, shuffle=True,
        generator=torch.Generator().manual_seed(settings.seed),
    )  # fmt: skip
    done = 0
    while done < settings.adapt_steps:
        for x, y in loader:
            step(F.cross_entropy(gated(x, generator(feats)), y))
            done += 1
            if on_step is not None:
                on_step(done, settings.adapt_steps)
            if done == settings.adapt_steps:
                break
    with torch.no_grad():
        scores = {k: v.detach().clone() for k, v in generator(feats).items()}
        gated(example, scores)
        counts_t = gated.counts()
        channels = torch.tensor([g.channels for g in space.groups], dtype=torch.float32)
        landed = float(latency(counts_t / channels))
    gated.remove()
    _unfreeze(net, frozen)
    counts = {g.name: int(c) for g, c in zip(space.groups, counts_t, strict=True)}

    def predict_ms(widths: Widths) -> float:
        with torch.no_grad():
            return float(latency(torch.tensor([widths[g.name] / g.channels for g in space.groups])))

    widths = gate_widths(space, scores, counts, predict_ms=predict_ms, budget_ms=budget_ms)
    return AdaptedMask(widths, keep_top(scores, widths), scores, counts, landed)


# -- helpers ----------------------------------------------------------------------------------------------
def _gate(
    generator: MaskGenerator,
    net: nn.Module,
    example: Tensor,
    space: WidthSpace,
    latency: LatencyOfFractions,
    budget_ms: float,
    settings: StampSettings,
) -> tuple[GatedNetwork, nn.Module, Callable[[Tensor], tuple[float, float]]]:
    """``net`` frozen (eval mode, no weight gradients) and gated; a dense copy to read features with; and
    ``step(task_loss)``: add the latency loss of the last forward pass's open channels, step the generator."""
    frozen = copy.deepcopy(net).eval()
    gated = GatedNetwork(net, example, space.groups, min_ratio=space.min_ratio, hidden=1)  # traces autograd
    net.requires_grad_(False)
    net.train(BATCH_STATS)
    channels = torch.tensor([g.channels for g in space.groups], dtype=torch.float32)
    params = list(generator.parameters())
    opt = torch.optim.SGD(params, lr=settings.lr, momentum=0.9)

    def step(task: Tensor) -> tuple[float, float]:
        predicted = latency(gated.counts() / channels)
        loss = task + latency_loss(predicted, budget_ms, weight=settings.weight, pull=settings.pull)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for p in params:  # each tensor alone: the encoder's many weights must not mute the base logits
            nn.utils.clip_grad_norm_(p, 1.0)
        opt.step()
        return float(task.detach()), float(predicted.detach())

    return gated, frozen, step


def _unfreeze(net: nn.Module, frozen: nn.Module) -> None:
    """Give ``net`` back its gradients and BatchNorm statistics (which ``_gate``'s steps changed)."""
    for p, q in zip(net.parameters(), frozen.parameters(), strict=True):
        p.requires_grad_(q.requires_grad)
    net.load_state_dict(frozen.state_dict())
    net.eval()


def _labels(dataset: Dataset) -> np.ndarray:
    """Every item's label (an in-memory dataset's array, else read item by item)."""
    labels = getattr(dataset, "labels", None)
    if labels is None and isinstance(dataset, Subset):
        return _labels(dataset.dataset)[np.asarray(dataset.indices)]
    if labels is None and hasattr(dataset, "tensors"):
        labels = dataset.tensors[1]
    if labels is None:
        labels = [int(dataset[i][1]) for i in range(len(dataset))]  # type: ignore[arg-type]
    return np.asarray(labels, dtype=np.int64)


def _sample(n: int, count: int, seed: int) -> np.ndarray:
    if n == 0:
        raise DataError("the dataset's training split is empty: give data with training images")
    return np.sort(np.random.default_rng(seed).permutation(n)[: min(n, count)])


def _stack(dataset: Dataset, indices: Sequence[int] | np.ndarray) -> tuple[Tensor, Tensor]:
    items = [dataset[int(i)] for i in indices]
    return torch.stack([x for x, _ in items]), torch.as_tensor([int(y) for _, y in items])


def subset_by_classes(dataset: Dataset, classes: Sequence[int]) -> Dataset:
    """The items of ``dataset`` whose label is in ``classes``, relabelled 0..len(classes)-1."""
    labels = _labels(dataset)
    idx = np.flatnonzero(np.isin(labels, list(classes)))
    return _Relabelled(dataset, idx.tolist(), {int(c): i for i, c in enumerate(classes)})


class _Relabelled(Dataset):
    """Items ``indices`` of ``dataset``, labels mapped by ``mapping``."""

    def __init__(self, dataset: Dataset, indices: Sequence[int], mapping: dict[int, int]) -> None:
        self.dataset, self.indices, self.mapping = dataset, list(indices), mapping
        self.labels = np.asarray(
            [mapping[int(y)] for y in _labels(dataset)[np.asarray(indices, dtype=np.int64)]]
        )

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        x, y = self.dataset[self.indices[index]]
        return x, self.mapping[int(y)]
