"""Random scores: the control any criterion worth having must beat."""

from __future__ import annotations

import zlib

import torch
import torch_pruning as tp
from torch import Tensor

from autoprune.search.criteria._base import Criterion, register_criterion


@register_criterion
class Random(Criterion):
    """Uniform random scores, reproducible from ``seed``. Each group draws from its own generator, seeded
    from ``seed`` and the group's root layer name, so scores do not depend on the order groups are scored
    in (``tp.importance.RandomImportance`` draws from the global RNG)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def __call__(self, group: tp.Group) -> Tensor:
        dep, idxs = group[0]
        # One 32-bit key: the CPU generator keeps only the low 32 bits of a seed.
        key = zlib.crc32(f"{self.seed}:{dep.target.name}".encode())
        generator = torch.Generator().manual_seed(key)
        return torch.rand(len(idxs), generator=generator)
