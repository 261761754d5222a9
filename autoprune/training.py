"""The training loop shared by dense training and every fine-tune: SGD + Nesterov, cosine schedule,
optionally distilling from a teacher (the dense network) while fine-tuning a pruned one, optionally
augmenting each batch (random crop + horizontal flip), and resumable after any complete epoch."""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from autoprune.errors import ConfigError

if TYPE_CHECKING:
    from autoprune.data import DatasetSplits

TrainState = dict[str, Any]
"""What ``train`` hands ``on_epoch`` and takes back as ``state``: weights, optimiser, schedule, step and
every random stream, enough to continue as if never stopped."""


def train(
    model: nn.Module,
    dataset: Dataset,
    *,
    epochs: float,
    lr: float,
    batch_size: int = 64,
    weight_decay: float = 5e-4,
    seed: int = 0,
    on_step: Callable[[int, int], None] | None = None,
    teacher: nn.Module | None = None,
    distill_temperature: float = 4.0,
    distill_alpha: float = 0.5,
    parameters: Iterable[nn.Parameter] | None = None,
    penalty: Callable[[int, int], Tensor] | None = None,
    optimizers: Sequence[torch.optim.Optimizer] = (),
    augment: bool = False,
    on_epoch: Callable[[TrainState], None] | None = None,
    state: TrainState | None = None,
) -> None:
    """Train ``model`` in place for ``epochs`` passes over ``dataset`` (fractions allowed: 0.5 is half
    an epoch). With a ``teacher``, the loss mixes in distillation (see ``distillation_loss``); the
    teacher is put in eval mode and never updated. ``on_step(done, total)`` reports progress. With
    ``augment`` each batch goes through ``augment_batch``. ``seed`` fixes the data order and the
    augmentation (each from its own generator; the global RNG only drives the model's own dropout).

    SGD trains ``parameters`` (default: all of ``model``'s); ``penalty(step, total)``, when given, is
    added to each step's loss after the forward pass, and ``optimizers`` step alongside SGD (e.g. gate
    networks with their own optimiser).

    After each complete pass over the data ``on_epoch(state)`` gets a ``TrainState`` (live tensors:
    serialise it before training goes on); passing it back as ``state``, with the same arguments,
    continues from there, global RNG included, and ends where an uninterrupted run ends. The extra
    ``optimizers`` are not in it."""
    if teacher is not None:
        _check_distill(distill_temperature, distill_alpha)
        teacher.eval()
    order = torch.Generator().manual_seed(seed)
    crops = torch.Generator().manual_seed(_stream_seed(seed, "augment"))  # independent of the order
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=order)
    per_epoch = len(loader)
    total = max(1, math.ceil(epochs * per_epoch)) if epochs > 0 else 0
    if total == 0:
        return
    params = list(model.parameters() if parameters is None else parameters)
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    step = 0 if state is None else _restore(state, total=total, model=model, opt=opt, sched=sched,
                                            order=order, crops=crops)  # fmt: skip
    model.train()
    while step < total:
        for x, y in loader:
            if augment:
                x = augment_batch(x, generator=crops)
            loss = _loss(model, x, y, teacher, distill_temperature, distill_alpha)
            if penalty is not None:
                loss = loss + penalty(step, total)
            _descend(loss, (opt, *optimizers), sched)
            step += 1
            if on_step is not None:
                on_step(step, total)
            if step == total:
                break
        if on_epoch is not None and step % per_epoch == 0:  # a complete pass: the loader drew its order
            on_epoch(_snapshot(step, total, model, opt, sched, order, crops))
    model.eval()


def _descend(loss: Tensor, optimizers: Sequence[torch.optim.Optimizer], sched: Any) -> None:
    """One step of every optimiser on ``loss``'s gradients, then the schedule's."""
    for o in optimizers:
        o.zero_grad(set_to_none=True)
    loss.backward()
    for o in optimizers:
        o.step()
    sched.step()


def _snapshot(
    step: int, total: int, model: nn.Module, opt: torch.optim.Optimizer, sched: Any,
    order: torch.Generator, crops: torch.Generator,
) -> TrainState:  # fmt: skip
    """The ``TrainState`` after ``step`` of ``total`` (live tensors)."""
    return {
        "step": step, "total": total, "model": model.state_dict(), "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(), "order_rng": order.get_state(),
        "augment_rng": crops.get_state(), "torch_rng": torch.get_rng_state(),
    }  # fmt: skip


def _loss(
    model: nn.Module, x: Tensor, y: Tensor, teacher: nn.Module | None, temperature: float, alpha: float
) -> Tensor:
    """Cross-entropy, or with a ``teacher`` the distillation loss (the teacher's forward without grad)."""
    logits = model(x)
    if teacher is None:
        return F.cross_entropy(logits, y)
    with torch.no_grad():
        teacher_logits = teacher(x)
    return distillation_loss(logits, teacher_logits, y, temperature=temperature, alpha=alpha)


def _stream_seed(seed: int, stream: str) -> int:
    """A seed for the random stream named ``stream`` of run ``seed``, unrelated to ``seed`` itself."""
    digest = hashlib.blake2b(f"{stream}:{seed}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _restore(
    state: TrainState,
    *,
    total: int,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    order: torch.Generator,
    crops: torch.Generator,
) -> int:
    """Load a ``TrainState`` into the run's objects; returns the step to continue from."""
    if state["total"] != total:
        raise ConfigError(
            f"the saved training state is for {state['total']} steps, this run has {total}: "
            "continue it with the settings it was saved with, or start afresh"
        )
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])  # after the optimiser's: the schedule spans the whole run
    order.set_state(state["order_rng"])
    crops.set_state(state["augment_rng"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])


def augment_batch(x: Tensor, *, generator: torch.Generator, pad: int = 4) -> Tensor:
    """Each image of ``x`` (N, C, H, W) cropped back to H x W at a random offset from a copy zero-padded
    by ``pad`` pixels on every side, and flipped left-right with probability 0.5: the standard recipe for
    small natural images (He et al. 2016). Zero is the mean after normalisation, i.e. mid-grey. One
    gather for the whole batch; draws from ``generator`` only."""
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    n, c, h, w = x.shape
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator).to(x.device)  # (2, N): top, left
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)  # (N,)
    padded = F.pad(x, (pad, pad, pad, pad))  # (N, C, H + 2 pad, W + 2 pad)
    across = torch.arange(w, device=x.device)
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = offsets[1, :, None] + torch.where(flip[:, None], across.flip(0), across)  # (N, W)
    index = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[index, channel, rows[:, None, :, None], cols[:, None, None, :]]  # (N, C, H, W)


def resolve_augment(requested: bool | None, ds: DatasetSplits) -> bool:
    """Whether to augment: what the user asked for, or (None) whatever suits the data
    (``DatasetSplits.augment_fits``). Asking for it on data it does not suit is the user's choice."""
    return ds.augment_fits if requested is None else bool(requested)


def distillation_loss(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, *, temperature: float, alpha: float
) -> Tensor:
    """(1 - alpha) * CE(student, labels) + alpha * T² * KL(p_teacher,T || p_student,T), where p_·,T is
    the softmax of logits / T (Hinton et al. 2015, "Distilling the knowledge in a neural network"; the
    T² keeps the soft term's gradients on the same scale as the hard term's as T changes)."""
    hard = F.cross_entropy(student_logits, labels)
    soft = F.kl_div(  # KL(teacher || student), averaged over the batch
        F.log_softmax(student_logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return (1 - alpha) * hard + alpha * temperature**2 * soft


def _check_distill(temperature: float, alpha: float) -> None:
    if not temperature > 0:
        raise ConfigError(f"distillation temperature must be > 0, got {temperature}: try 4")
    if not 0 <= alpha <= 1:
        raise ConfigError(f"distillation alpha must be in [0, 1], got {alpha}: try 0.5")


def calibration_batches(
    dataset: Dataset, *, count: int, batch_size: int = 64, seed: int = 0
) -> list[tuple[Tensor, Tensor]]:
    """``count`` fixed batches from a seeded shuffle of ``dataset`` (fewer if it runs out): calibration
    data for data-driven importance criteria and BatchNorm recalibration."""
    if count < 1 or batch_size < 1:
        raise ConfigError(f"calibration needs count >= 1 and batch_size >= 1, got {count} and {batch_size}")
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    return [(x, y) for x, y in itertools.islice(loader, count)]


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, *, batch_size: int = 256) -> float:
    """Top-1 accuracy (0..1) of ``model`` on ``dataset``."""
    model.eval()
    correct = seen = 0
    for x, y in DataLoader(dataset, batch_size=batch_size):
        correct += int((model(x).argmax(1) == y).sum())
        seen += len(y)
    return correct / max(1, seen)
