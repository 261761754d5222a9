"""Whether two measurement artifacts (profile, lookup table, predictor) may be used together: one
comparison of their sidecar metadata, and the one-line text that says what differs.

A key is a top-level sidecar entry (``"grid"``) or a dotted path into one (``"sampling.round_to"``).
The device is compared through :func:`device_identity` (library versions may differ) and always first:
of all differences it is the one a user most needs to hear about.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from autoprune.config import SamplingConfig
from autoprune.errors import ProfileError
from autoprune.latency.fingerprint import device_identity

DEVICE = "device"
# The sampling settings that decide the width grid (a lookup table's axes and the search space).
GRID_KEYS = ("sampling.min_ratio", "sampling.round_to", "sampling.round_min_channels")
# Two runs extend one profile when all of these match: every sampling setting but the sample count.
PROFILE_KEYS = (
    DEVICE, "model", "num_classes", "input_shape", "backend", "backend_settings", "protocol", "groups",
    *(f"sampling.{f.name}" for f in fields(SamplingConfig) if f.name != "samples"),
)  # fmt: skip
# Two runs extend one lookup table; the model's groups and convolutions last, as they follow from the rest.
LUT_KEYS = (DEVICE, "model", "input_shape", "backend", "backend_settings", "protocol", "grid", *GRID_KEYS,
            "groups", "layers")  # fmt: skip
# A lookup table serves the profile beside it (as a predictor's features).
PROFILE_LUT_KEYS = (DEVICE, "groups", "input_shape", "backend", "precision", "backend_settings")


def _value(meta: Mapping[str, Any], key: str) -> Any:
    value: Any = meta
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if key == DEVICE and isinstance(value, Mapping):
        return device_identity(dict(value))
    return value


def mismatch(a_meta: Mapping[str, Any], b_meta: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    """The first of ``keys`` whose values differ between the two sidecars (``"device"`` checked first),
    or None when they agree on all of them."""
    ordered = sorted(keys, key=lambda k: k != DEVICE)  # stable: the others keep their order
    return next((k for k in ordered if _value(a_meta, k) != _value(b_meta, k)), None)


def difference(
    key: str, a_meta: Mapping[str, Any], b_meta: Mapping[str, Any], *, summarize: Collection[str] = ()
) -> str:
    """``another KEY (A, here B)`` for an error message, ``b_meta`` being this run's or machine's; the
    device names its first differing field; keys in ``summarize`` are too long to print."""
    mine, theirs = _value(a_meta, key), _value(b_meta, key)
    if key in summarize:
        return f"another model architecture (its {key} differ)"
    if key == DEVICE and isinstance(mine, Mapping) and isinstance(theirs, Mapping):
        field = min((k for k in {*mine, *theirs} if mine.get(k) != theirs.get(k)), default=None)
        if field is not None:
            return f"another device ({field}: {mine.get(field)!r}, here {theirs.get(field)!r})"
    return f"another {key} ({mine!r}, here {theirs!r})"


def check_same_run(
    old_meta: Mapping[str, Any],
    new_meta: Mapping[str, Any],
    path: Path,
    keys: Sequence[str],
    *,
    summarize: Collection[str] = (),
) -> None:
    """Refuse to add measurements to ``path`` (measured as ``old_meta``) unless every key matches."""
    key = mismatch(old_meta, new_meta, keys)
    if key is not None:
        what = difference(key, old_meta, new_meta, summarize=summarize)
        raise ProfileError(f"'{path}' was measured with {what}: pass a new --out, or delete it to start over")


__all__ = [
    "GRID_KEYS",
    "LUT_KEYS",
    "PROFILE_KEYS",
    "PROFILE_LUT_KEYS",
    "check_same_run",
    "difference",
    "mismatch",
]
