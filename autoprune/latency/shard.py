"""Profiling in shards: ``--shard I/N`` measures every N-th network of the plan, from the I-th on.

Every shard computes the same full plan (:func:`~autoprune.latency.sampler.plan_samples`: the same
model, seed and sampling settings give the same networks in the same order) and measures the networks
whose plan index ``i`` has ``i % N == I - 1`` (I counts from 1, like ``--shard 1/3`` in Jest or
Playwright). The shards are therefore disjoint and together the whole plan, and a row's ``sample_id``
is its index in the plan, as in an unsharded profile. A shard records its place and a digest of the
plan in its sidecar (``"shard"``), so :func:`~autoprune.latency.merge.merge_profiles` can check that
shards belong together.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from autoprune.errors import ConfigError
from autoprune.graph import Widths

_FORMAT = "pass --shard I/N with whole numbers 1 <= I <= N, e.g. --shard 1/3"
ACTIVE_SHARD = (
    "--active picks networks from all that are measured, which a shard does not see: drop --shard or --active"
)


@dataclass(frozen=True)
class Shard:
    """The ``index``-th of ``count`` shards (1-based)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise ConfigError(f"--shard {self.index}/{self.count} is not a shard: {_FORMAT}")

    @classmethod
    def parse(cls, text: str | Shard) -> Shard:
        """``"2/3"`` -> ``Shard(2, 3)``; anything else is a one-line :class:`ConfigError`."""
        if isinstance(text, Shard):
            return text
        index, sep, count = str(text).partition("/")
        if not sep or not index.strip().isdigit() or not count.strip().isdigit():
            raise ConfigError(f"--shard '{text}' is not I/N: {_FORMAT}")
        return cls(int(index), int(count))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, plan_index: int) -> bool:
        return plan_index % self.count == self.index - 1

    def part(self, plan: Sequence[tuple[str, Widths]]) -> list[int]:
        """The plan indices this shard measures."""
        return [i for i in range(len(plan)) if self.owns(i)]

    def to_meta(self, plan: Sequence[tuple[str, Widths]]) -> dict[str, Any]:
        return {"index": self.index, "count": self.count, "plan": plan_digest(plan), "planned": len(plan)}

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Shard | None:
        """The shard a profile sidecar says it is, or None for a whole (unsharded or merged) profile."""
        entry = meta.get("shard")
        return None if not isinstance(entry, dict) else cls(int(entry["index"]), int(entry["count"]))


def plan_digest(plan: Sequence[tuple[str, Widths]]) -> str:
    """A short digest of the planned networks (kind and widths, in order): equal digests, equal plans."""
    text = json.dumps([[kind, sorted(widths.items())] for kind, widths in plan], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe(shard: Shard | None) -> str:
    return "the whole plan" if shard is None else f"shard {shard}"


__all__ = ["ACTIVE_SHARD", "Shard", "describe", "plan_digest"]
