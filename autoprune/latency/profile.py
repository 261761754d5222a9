"""Latency profiles: one parquet row per measured sub-network, a JSON sidecar saying how and where.

Columns: ``sample_id``, ``kind``, ``w:<group>`` (kept channels per group), ``macs``, ``params`` and the
latency statistics of :class:`~autoprune.latency.protocol.LatencyStats` (``noisy`` flags a network whose
rounds still disagreed after re-measuring). The latency is corrected for the host's drift: the dense
network, the *reference*, is timed round for round beside every ``protocol.reference_every``-th network;
``raw_ms`` is the network's median as measured, ``reference_ms`` the reference's beside it (for rows
timed without it, the mean of the timings before and after; ``reference_beside`` says which), ``ratio``
the network's latency relative to the reference (the median of its round pairs' ratios), and
``latency_ms``, what predictors fit, is ``ratio`` times the profile's reference latency, the median of
all the reference timings (:meth:`Profile.reference_ms`). ``cuda_graph`` says whether the timed runs
replayed a CUDA graph, ``enqueue_bound`` whether the host's enqueue time exceeded 0.8 x the GPU time
(None where not measured: CPU backends). Rows are appended atomically
as they are measured, so killing the process loses at most the network in flight; a rerun with the same
settings skips the networks already in the file. One process writes a profile at a time; to measure
on several machines, each measures one shard of the plan (:mod:`autoprune.latency.shard`) and
:func:`~autoprune.latency.merge.merge_profiles` joins them.

Profiles live under ``latency_profiles/<device-slug>/<model>__<backend>__<precision>__bs<N>__<H>x<W>``
(``.parquet`` and ``.json``): :func:`default_profile_path`.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from autoprune import __version__
from autoprune._io import read_parquet, write_json
from autoprune.config import ProtocolConfig, SamplingConfig
from autoprune.errors import ConfigError, ProfileError
from autoprune.graph import ChannelGraph, ChannelGroup, Widths
from autoprune.latency._measuring import (
    WIDTH_PREFIX,
    Reference,
    Rows,
    measure_active,
    measure_plan,
)
from autoprune.latency.backends import LatencyBackend
from autoprune.latency.compat import PROFILE_KEYS, check_same_run
from autoprune.latency.hygiene import host_record, load_average, pinned
from autoprune.latency.sampler import plan_samples
from autoprune.latency.shard import ACTIVE_SHARD, Shard, describe

FORMAT = 3  # 3: drift-corrected latency_ms, raw_ms and reference_ms columns


@dataclass
class Profile:
    path: Path
    meta: dict[str, Any]
    rows: pd.DataFrame

    @property
    def groups(self) -> list[ChannelGroup]:
        return [ChannelGroup(name, int(ch), ()) for name, ch in self.meta["groups"]]

    def widths(self) -> list[Widths]:
        cols = [WIDTH_PREFIX + g.name for g in self.groups]
        return [
            {c[len(WIDTH_PREFIX) :]: int(v) for c, v in zip(cols, row, strict=True)}
            for row in self.rows[cols].itertuples(index=False)
        ]

    def latency_ms(self, *, raw: bool = False) -> np.ndarray:
        """Each network's drift-corrected latency (``raw=True``: as measured)."""
        return self.rows["raw_ms" if raw else "latency_ms"].to_numpy(dtype=float)

    def reference_ms(self) -> float | None:
        """The profile's reference latency (the dense network's, median of its timings beside the rows),
        the unit the corrected latencies are in; None for a profile measured without a reference."""
        beside = self.rows.get("reference_beside", pd.Series(dtype=bool)).to_numpy(dtype=bool)
        if not beside.any():
            return None
        return float(np.median(self.rows["reference_ms"].to_numpy(dtype=float)[beside]))

    def noisy(self) -> np.ndarray:
        """Per row, whether the protocol flagged it noisy (all False for rows without the column)."""
        if "noisy" not in self.rows:
            return np.zeros(len(self.rows), dtype=bool)
        return self.rows["noisy"].to_numpy(dtype=bool)

    def without_noisy(self) -> Profile:
        """The same profile, its flagged rows left out (renumbered from 0)."""
        return Profile(self.path, self.meta, self.rows[~self.noisy()].reset_index(drop=True))

    def for_fitting(self, *, include_noisy: bool = False) -> tuple[Profile, str | None]:
        """The rows a predictor is fit on: without those flagged noisy, unless ``include_noisy`` or more
        than half are flagged (a host busy through the whole profile: leaving them out would leave too few
        to fit, and the rest are no quieter); with a sentence saying so when rows were flagged."""
        flagged, n = int(self.noisy().sum()), len(self.rows)
        if include_noisy or not flagged:
            return self, None
        if flagged > n / 2:
            return self, (
                f"{flagged} of {n} networks were flagged noisy (the host was busy while profiling): fitting "
                "on all of them; profile again on a quieter host for a closer predictor"
            )
        note = f"{flagged} of {n} networks flagged noisy left out (--include-noisy keeps them)"
        return self.without_noisy(), note


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def slug(text: str) -> str:
    """Lower-case letters, digits, dashes and single underscores (``__`` separates a profile name's
    fields): safe in a file name on every system, and ``vgg11_bn`` stays ``vgg11_bn``."""
    return re.sub(r"__+", "_", re.sub(r"[^a-z0-9_]+", "-", text.lower())).strip("-_") or "unknown"


def device_slug(fingerprint: dict[str, Any]) -> str:
    """The GPU's name when the backend measures on one, else the CPU model: ``nvidia-h100-80gb-hbm3``."""
    accelerator = fingerprint.get("accelerator")
    return slug(accelerator["gpu"] if accelerator else str(fingerprint.get("cpu", "cpu")))


def default_profile_path(
    root: str | Path, *, model: str, backend: LatencyBackend, input_shape: Sequence[int]
) -> Path:
    """``root/<device-slug>/<model>__<backend>__<precision>__bs<N>__<H>x<W>.parquet``."""
    batch, _, height, width = (int(d) for d in input_shape)
    name = f"{slug(model)}__{backend.name}__{backend.precision}__bs{batch}__{height}x{width}.parquet"
    return Path(root) / device_slug(backend.fingerprint()) / name


def _statistic(settings: dict[str, Any]) -> str:
    copies = "including host<->device copies" if settings.get("transfers") else "compute only"
    return f"median of round medians, ms, {copies}"


def read_measurements(path: Path, side: Path, *, what: str, fix: str) -> tuple[dict[str, Any], pd.DataFrame]:
    """A parquet file and its JSON sidecar, or a one-line ProfileError naming ``fix``."""
    if not path.is_file() or not side.is_file():
        missing = path if not path.is_file() else side
        raise ProfileError(f"{what} '{missing}' does not exist: {fix}")
    try:
        meta = json.loads(side.read_text())
        rows = read_parquet(path)
    except (ValueError, OSError) as exc:
        raise ProfileError(f"{what} '{path}' cannot be read ({type(exc).__name__}): {fix}") from exc
    if not isinstance(meta, dict):
        raise ProfileError(f"'{side}' is not an autoprune sidecar: {fix}")
    return meta, rows


def read_profile(path: str | Path) -> Profile:
    path = Path(path)
    side = sidecar_path(path)
    meta, rows = read_measurements(
        path, side, what="profile file", fix=f"run autoprune profile ... --out {path}"
    )
    if meta.get("format") == 2 and "groups" in meta:
        raise ProfileError(
            f"'{path}' is a format-2 profile, measured without drift correction: profile again with this "
            f"version (autoprune profile ... --out NEW_PATH) to get format {FORMAT}"
        )
    if meta.get("format") != FORMAT or "groups" not in meta or "kind" in meta:  # "kind": a lookup table
        raise ProfileError(
            f"'{side}' is not an autoprune profile sidecar (format {FORMAT}): re-run autoprune profile"
        )
    return Profile(path, meta, rows)


def measurement_meta(
    *,
    model_spec: str | None,
    input_shape: Sequence[int],
    backend: LatencyBackend,
    protocol: ProtocolConfig,
    sampling: SamplingConfig,
) -> dict[str, Any]:
    """What every measurement file records about how and where it was measured."""
    return {
        "autoprune_version": __version__,
        "model": model_spec,
        "input_shape": [int(d) for d in input_shape],
        "batch_size": int(input_shape[0]),
        "backend": backend.name,
        "precision": backend.precision,
        "backend_settings": backend.settings(),
        "device": backend.fingerprint(),
        "protocol": protocol.to_dict(),
        "sampling": sampling.to_dict(),
        "latency_statistic": _statistic(backend.settings()),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _resume(
    out: Path, meta: dict[str, Any], shard: Shard | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows and runs a profile at ``out`` holds (none if there is none), after checking that it was
    measured with the same settings and shard; ``meta`` keeps its creation time and active settings."""
    if not (out.exists() or sidecar_path(out).exists()):
        return [], []
    existing = read_profile(out)
    check_same_run(existing.meta, meta, out, PROFILE_KEYS, summarize=("groups",))
    if Shard.from_meta(existing.meta) != shard:
        raise ProfileError(
            f"'{out}' holds {describe(Shard.from_meta(existing.meta))} and this run measures "
            f"{describe(shard)}: pass a new --out, or the --shard it was measured with"
        )
    meta["created"] = existing.meta.get("created", meta["created"])
    meta["active"] = meta["active"] or existing.meta.get("active")  # the last active run's settings
    return existing.rows.to_dict("records"), list(existing.meta.get("runs", []))


def _profile_meta(
    model_spec: str, num_classes: int, input_shape: Sequence[int], backend: LatencyBackend,
    protocol: ProtocolConfig, sampling: SamplingConfig, groups: Sequence[ChannelGroup], *,
    initial: int | None, shard: Shard | None, plan: list[tuple[str, Widths]],
) -> dict[str, Any]:  # fmt: skip
    """The profile's sidecar before its runs: how it is measured, the model's groups, the active
    profiling's settings (``initial``: None when not active) and the shard's part of the plan."""
    return {
        "format": FORMAT,
        **measurement_meta(
            model_spec=model_spec,
            input_shape=input_shape,
            backend=backend,
            protocol=protocol,
            sampling=sampling,
        ),
        "num_classes": num_classes,
        "groups": [[g.name, g.channels] for g in groups],
        "active": {"initial": initial} if initial is not None else None,
        **({"shard": shard.to_meta(plan)} if shard is not None else {}),
    }


def profile_model(
    model: nn.Module,
    *,
    model_spec: str,
    num_classes: int,
    input_shape: Sequence[int],
    backend: LatencyBackend,
    sampling: SamplingConfig,
    protocol: ProtocolConfig,
    out: str | Path,
    on_sample: Callable[[int, int], None] | None = None,
    acquire: Callable[[Profile, int], list[Widths]] | None = None,
    initial: int = 0,
    shard: Shard | None = None,
) -> Profile:
    """Measure the planned sub-networks of ``model`` and append them to the profile ``out``.

    With ``acquire`` (active profiling), only the plan's first ``initial`` networks are measured; then
    ``acquire(profile_so_far, n)`` proposes up to ``n`` networks at a time (kind ``active``) until the
    profile has ``sampling.samples`` rows, or stops when it proposes nothing new. With ``shard``, only
    the shard's part of the plan is measured (:mod:`autoprune.latency.shard`). ``on_sample(done,
    total)`` is called after every network (measured or already present).
    """
    if initial < 0:
        raise ConfigError(f"--active-initial must be >= 0, got {initial}")
    if shard is not None and acquire is not None:
        raise ConfigError(ACTIVE_SHARD)
    out = Path(out)
    example = torch.zeros(1, *input_shape[1:])  # widths, MACs and params are per image
    groups = ChannelGraph(copy.deepcopy(model).eval(), example).groups
    plan = plan_samples(groups, sampling)
    active = initial if acquire is not None else None
    meta = _profile_meta(model_spec, num_classes, input_shape, backend, protocol, sampling, groups,
                         initial=active, shard=shard, plan=plan)  # fmt: skip
    records, runs = _resume(out, meta, shard)
    for stale in out.parent.glob(f".{out.name}.*.tmp"):  # left by a process killed mid-write
        stale.unlink(missing_ok=True)
    threads = backend.settings().get("threads")
    with pinned(int(threads or 1)) as cpus, Reference(model, input_shape, backend, protocol) as ref:
        run = host_record(threads=threads, pinned_cpus=cpus, load_start=load_average())
        meta["runs"] = [*runs, run]
        write_json(sidecar_path(out), meta)
        rows = Rows(model, example, groups, out, meta, records, ref, backend, protocol)
        total = sampling.samples if acquire is not None else len(plan if shard is None else shard.part(plan))
        measure_plan(rows, plan[:initial] if acquire is not None else plan, shard=shard, total=total,
                     on_sample=on_sample)  # fmt: skip
        if acquire is not None:
            measure_active(rows, acquire, samples=sampling.samples, on_sample=on_sample)
        run["load_1min_end"] = load_average()
        run["reference_overhead"], run["reference_every"] = ref.overhead(), ref.every
        write_json(sidecar_path(out), meta)
    return read_profile(out)
