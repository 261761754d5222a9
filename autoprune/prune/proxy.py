"""The cheap accuracy estimate that ranks many pruned networks: adaptive BatchNorm (EagleEye, Li et al.,
ECCV 2020). Pruning shifts the statistics every later BatchNorm sees; re-estimating them in train mode
on a few fixed training batches, then scoring on a fixed validation subset, predicts the accuracy after a
short fine-tune far better than the pruned network's raw accuracy does (Distiller measured Pearson
0.07-0.14 for raw accuracy, EagleEye ~0.75-0.9 after recalibration). The batches and the subset are drawn
once, so every candidate is scored on the same data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from autoprune.errors import ConfigError
from autoprune.prune.recover import recalibrate_bn
from autoprune.training import calibration_batches


@dataclass(frozen=True)
class ProxyScore:
    accuracy: float  # top-1 on the validation subset (0..1)
    loss: float  # mean cross-entropy there

    @property
    def value(self) -> float:
        """One number to rank by, higher is better: minus the loss. docs/benchmarks/proxy.md (K=5,
        V=1000), networks of one budget against their accuracy after a short fine-tune, Kendall: vgg11_bn /
        CIFAR-10 +0.68 by loss, +0.25 by accuracy; resnet20 / Fashion-MNIST +0.28 by loss, +0.31 by
        accuracy (a tie; across budgets there the accuracy ranks better, which ``screen``, whose
        candidates all sit at one budget, does not need)."""
        return -self.loss


class AdaptiveBNProxy:
    """``score(module)``: recalibrate ``module``'s BatchNorm statistics (in place) on ``batches`` fixed
    training batches of ``batch_size``, then score it on ``val_size`` fixed validation items (the first of
    a seeded shuffle; all of them when the split is smaller)."""

    def __init__(
        self,
        train: Dataset,
        val: Dataset,
        *,
        batches: int = 5,
        val_size: int = 1000,
        batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        if batches < 1 or val_size < 1:
            raise ConfigError(
                f"the accuracy proxy needs >= 1 calibration batch and >= 1 validation item, got {batches} "
                f"and {val_size}: try --proxy-batches 5 --proxy-val 1000"
            )
        self.batches = calibration_batches(train, count=batches, batch_size=batch_size, seed=seed)
        order = torch.randperm(len(val), generator=torch.Generator().manual_seed(seed))  # type: ignore[arg-type]
        subset = Subset(val, order[: min(val_size, len(order))].tolist())
        # Held in memory once: re-reading (and decoding) the subset for every candidate would dominate.
        self.val: list[tuple[Tensor, Tensor]] = list(DataLoader(subset, batch_size=256))
        self.val_size = len(subset)

    @torch.no_grad()
    def score(self, module: nn.Module) -> ProxyScore:
        recalibrate_bn(module, self.batches)
        module.eval()
        correct, loss = 0, 0.0
        for x, y in self.val:
            logits = module(x)
            correct += int((logits.argmax(1) == y).sum())
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
        return ProxyScore(correct / self.val_size, loss / self.val_size)
