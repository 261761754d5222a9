"""The training loop shared by dense training and every fine-tune: SGD + Nesterov, cosine schedule."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset


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
) -> None:
    """Train ``model`` in place for ``epochs`` passes over ``dataset`` (fractions allowed: 0.5 is half
    an epoch). ``on_step(done, total)`` reports progress."""
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    total = max(1, math.ceil(epochs * len(loader))) if epochs > 0 else 0
    if total == 0:
        return
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    model.train()
    step = 0
    while step < total:
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if on_step is not None:
                on_step(step, total)
            if step == total:
                break
    model.eval()


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, *, batch_size: int = 256) -> float:
    """Top-1 accuracy (0..1) of ``model`` on ``dataset``."""
    model.eval()
    correct = seen = 0
    for x, y in DataLoader(dataset, batch_size=batch_size):
        correct += int((model(x).argmax(1) == y).sum())
        seen += len(y)
    return correct / max(1, seen)
