"""Joining the shards of one profile plan (:mod:`autoprune.latency.shard`) into one profile.

Shards join when they were measured on identical devices (the same
:func:`~autoprune.latency.fingerprint.device_identity`: library versions may differ) with the same
settings, plan and split, each shard once. Each shard timed the dense reference beside its own rows, so
every row's ``ratio`` is relative to the reference on the machine and at the time it was measured; the
merged ``latency_ms`` is that ratio times the median of all shards' reference timings
(:meth:`Profile.reference_ms` of the result), as one long run's rows are corrected for drift. The
result is an ordinary profile: ``fit`` reads it, and an unsharded ``profile`` run with the same
settings extends it (measuring only networks it lacks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autoprune._io import atomic_write, write_json
from autoprune.config import SamplingConfig
from autoprune.errors import ConfigError, ProfileError
from autoprune.latency.compat import DEVICE, PROFILE_KEYS, mismatch
from autoprune.latency.fingerprint import device_identity
from autoprune.latency.profile import Profile, read_profile, sidecar_path
from autoprune.latency.sampler import plan_samples, widths_key
from autoprune.latency.shard import Shard, plan_digest

# Shards join when all of these match: the plan's length too, so their parts are parts of one plan.
MERGE_KEYS = (*PROFILE_KEYS, "sampling.samples")
_SAME = "merge only shards measured on identical devices by the same command but for --shard"


def merge_profiles(paths: Sequence[str | Path], *, out: str | Path, partial: bool = False) -> Profile:
    """Check that the shard profiles at ``paths`` belong together, then write them as one profile
    ``out`` (its sidecar last). A missing shard, or a shard missing networks of its part, is refused
    unless ``partial``. Nothing is written when a check fails; ``out`` must not exist yet."""
    out = Path(out)
    if not paths:
        raise ConfigError("--merge needs the shards to join: autoprune profile --merge SHARD... --out OUT")
    if sidecar_path(out).exists():
        raise ProfileError(f"'{out}' exists: pass a new --out, or delete it to merge again")
    if out.resolve() in {Path(p).resolve() for p in paths}:
        raise ConfigError(f"--out '{out}' is one of the shards: pass a new --out")
    shards = [_read_shard(Path(p)) for p in paths]
    first, first_shard = shards[0]
    seen: dict[int, Path] = {}
    for prof, shard in shards:
        _check_same(first, prof)
        if shard.count != first_shard.count:
            raise ProfileError(
                f"'{prof.path}' is shard {shard} and '{first.path}' shard {first_shard}: {_SAME}"
            )
        if shard.index in seen:
            raise ProfileError(
                f"'{seen[shard.index]}' and '{prof.path}' are both shard {shard}: pass each shard once"
            )
        seen[shard.index] = prof.path
    plan = plan_samples(first.groups, SamplingConfig.from_dict(first.meta["sampling"]))
    if plan_digest(plan) != first.meta["shard"]["plan"]:
        raise ProfileError(
            f"'{first.path}' was planned by autoprune {first.meta.get('autoprune_version')}, whose plan "
            "differs from this version's: merge with the version that measured the shards"
        )
    lacking = {prof.path: _missing(prof, shard, plan) for prof, shard in shards}
    absent = [i for i in range(1, first_shard.count + 1) if i not in seen]
    if not partial and absent:
        names = ", ".join(f"{i}/{first_shard.count}" for i in absent)
        raise ProfileError(
            f"shard{'s' * (len(absent) > 1)} {names} missing: measure and pass every shard (autoprune "
            "profile ... --shard I/N), or add --partial for a profile of the networks measured so far"
        )
    for path, missing in lacking.items():
        if not partial and missing:
            raise ProfileError(
                f"'{path}' lacks {missing} networks of its part of the plan: rerun its command (it continues "
                "where it stopped), or add --partial for a profile of the networks measured so far"
            )
    shards.sort(key=lambda s: s[1].index)
    frame = _pooled(pd.concat([prof.rows for prof, _ in shards], ignore_index=True))
    meta = _merged_meta(shards, plan, partial=bool(absent) or any(lacking.values()))
    atomic_write(out, lambda tmp: frame.to_parquet(tmp, index=False))
    write_json(sidecar_path(out), meta)  # last: a profile is complete once its sidecar exists
    return read_profile(out)


def _read_shard(path: Path) -> tuple[Profile, Shard]:
    prof = read_profile(path)
    shard = Shard.from_meta(prof.meta)
    if shard is None:
        raise ProfileError(
            f"'{path}' is a whole profile, not a shard: merge the profiles written by autoprune profile "
            "... --shard I/N"
        )
    return prof, shard


def _check_same(first: Profile, other: Profile) -> None:
    """Refuse ``other`` unless it was measured like ``first``, naming the first field that differs."""
    key = mismatch(first.meta, other.meta, MERGE_KEYS)
    if key is None:
        if other.meta["shard"]["plan"] != first.meta["shard"]["plan"]:
            raise ProfileError(f"'{other.path}' was planned differently from '{first.path}': {_SAME}")
        return
    field, theirs, mine = _differing(key, other.meta, first.meta)
    if key == "groups":
        what = f"for another model architecture than '{first.path}' (its groups differ)"
    elif key == DEVICE:
        field = field.removeprefix(f"{DEVICE}.")
        what = f"on another device ({field} {theirs!r}, not {mine!r} as in '{first.path}')"
    else:
        what = f"with {field} {theirs!r}, not {mine!r} as in '{first.path}'"
    raise ProfileError(f"'{other.path}' was measured {what}: {_SAME}")


def _differing(key: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[str, Any, Any]:
    """The dotted name of the first field under ``key`` where ``a`` and ``b`` differ, and both values."""
    a_value, b_value = _get(a, key), _get(b, key)
    if key == DEVICE:
        a_value, b_value = device_identity(dict(a_value or {})), device_identity(dict(b_value or {}))
    while isinstance(a_value, Mapping) and isinstance(b_value, Mapping):
        sub = min((k for k in {*a_value, *b_value} if a_value.get(k) != b_value.get(k)), default=None)
        if sub is None:
            break
        key, a_value, b_value = f"{key}.{sub}", a_value.get(sub), b_value.get(sub)
    return key, a_value, b_value


def _get(meta: Mapping[str, Any], key: str) -> Any:
    value: Any = meta
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _missing(prof: Profile, shard: Shard, plan: list[tuple[str, dict[str, int]]]) -> int:
    """How many networks of the shard's part are not in its file; refuse rows that are not of its part."""
    groups = prof.groups
    owned = set(shard.part(plan))
    for sample_id, widths in zip(prof.rows["sample_id"], prof.widths(), strict=True):
        i = int(sample_id)
        if i not in owned or widths_key(plan[i][1], groups) != widths_key(widths, groups):
            raise ProfileError(
                f"'{prof.path}' holds a network that is not in its part of the plan (sample_id {i}; was it "
                f"extended with another --samples?): measure shard {shard} again into a new --out"
            )
    return len(owned - {int(i) for i in prof.rows["sample_id"]})


def _pooled(frame: pd.DataFrame) -> pd.DataFrame:
    """``latency_ms`` = each row's ratio to its own shard's reference x the median of every shard's
    reference timings (a profile measured without a reference keeps raw latency)."""
    beside = frame["reference_beside"].to_numpy(dtype=bool)
    if beside.any():
        reference = float(np.median(frame["reference_ms"].to_numpy(dtype=float)[beside]))
        frame["latency_ms"] = frame["ratio"].to_numpy(dtype=float) * reference
    else:
        frame["latency_ms"] = frame["raw_ms"].to_numpy(dtype=float)
    return frame


def _merged_meta(shards: list[tuple[Profile, Shard]], plan: list[Any], *, partial: bool) -> dict[str, Any]:
    first, first_shard = shards[0]
    meta = {k: v for k, v in first.meta.items() if k != "shard"}
    meta["created"] = min(str(prof.meta.get("created", "")) for prof, _ in shards)
    meta["runs"] = [
        {**run, "shard": str(shard)} for prof, shard in shards for run in prof.meta.get("runs", [])
    ]
    meta["merged"] = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "count": first_shard.count,
        "plan": plan_digest(plan),
        "planned": len(plan),
        "partial": partial,
        "shards": [
            {
                "index": shard.index,
                "path": str(prof.path),
                "rows": len(prof.rows),
                "versions": prof.meta.get("device", {}).get("versions"),
            }
            for prof, shard in shards
        ],
    }
    return meta


__all__ = ["MERGE_KEYS", "merge_profiles"]
