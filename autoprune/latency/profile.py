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
import time
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
from autoprune._io import atomic_write, read_parquet, write_json
from autoprune.config import ProtocolConfig, SamplingConfig
from autoprune.errors import ConfigError, ProfileError
from autoprune.graph import ChannelGraph, ChannelGroup, Widths, count_macs_params, pruned_copy
from autoprune.latency.backends import LatencyBackend, Session
from autoprune.latency.compat import PROFILE_KEYS, check_same_run
from autoprune.latency.hygiene import host_record, load_average, pinned
from autoprune.latency.protocol import LatencyStats, measure, measure_referenced
from autoprune.latency.sampler import plan_samples, widths_key
from autoprune.latency.shard import ACTIVE_SHARD, Shard, describe

FORMAT = 3  # 3: drift-corrected latency_ms, raw_ms and reference_ms columns
WIDTH_PREFIX = "w:"


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
    meta = {
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
        "active": {"initial": initial} if acquire is not None else None,
        **({"shard": shard.to_meta(plan)} if shard is not None else {}),
    }
    records: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    if out.exists() or sidecar_path(out).exists():
        existing = read_profile(out)
        check_same_run(existing.meta, meta, out, PROFILE_KEYS, summarize=("groups",))
        if Shard.from_meta(existing.meta) != shard:
            raise ProfileError(
                f"'{out}' holds {describe(Shard.from_meta(existing.meta))} and this run measures "
                f"{describe(shard)}: pass a new --out, or the --shard it was measured with"
            )
        meta["created"] = existing.meta.get("created", meta["created"])
        meta["active"] = meta["active"] or existing.meta.get("active")  # the last active run's settings
        runs = list(existing.meta.get("runs", []))
        records = existing.rows.to_dict("records")
    for stale in out.parent.glob(f".{out.name}.*.tmp"):  # left by a process killed mid-write
        stale.unlink(missing_ok=True)
    threads = backend.settings().get("threads")
    with pinned(int(threads or 1)) as cpus, _Reference(model, input_shape, backend, protocol) as ref:
        run = host_record(threads=threads, pinned_cpus=cpus, load_start=load_average())
        meta["runs"] = [*runs, run]
        write_json(sidecar_path(out), meta)
        _profile_rows(model, example, groups, out, meta, records, ref, backend, protocol, sampling, on_sample,
                      acquire, plan[:initial] if acquire is not None else plan, shard)  # fmt: skip
        run["load_1min_end"] = load_average()
        run["reference_overhead"], run["reference_every"] = ref.overhead(), ref.every
        write_json(sidecar_path(out), meta)
    return read_profile(out)


MAX_REFERENCE_OVERHEAD = 0.25
_SETTLED = 4


class _Reference:
    """The dense network's session, opened at the first network this run measures and kept for the run,
    timed beside every ``reference_every``-th network (the rows between are normalised in
    :func:`corrected`), less often while the time spent timing it exceeds ``MAX_REFERENCE_OVERHEAD`` of
    the rest (checked once it was timed ``_SETTLED`` times)."""

    def __init__(
        self, model: nn.Module, input_shape: Sequence[int], backend: LatencyBackend, protocol: ProtocolConfig
    ) -> None:
        self._open = lambda: _Stopwatch(backend.session(model, input_shape))  # a resume may measure none
        self.every = protocol.reference_every
        self._session: _Stopwatch | None = None
        self._since, self._timed, self._last_ms = self.every, 0, float("nan")
        self._started = time.perf_counter()

    def __enter__(self) -> _Reference:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._session is not None:
            self._session.close()

    def measure(self, session: Session, protocol: ProtocolConfig) -> tuple[LatencyStats, float, float, bool]:
        """The network's statistics, the reference's latency, the network's latency relative to it, and
        whether the reference was timed beside it (if not: the last timing, and no ratio yet)."""
        if self.every == 0 or self._since + 1 < self.every:
            self._since += 1
            return measure(session, protocol), self._last_ms, float("nan"), False
        if self._session is None:
            self._session = self._open()
        timed = measure_referenced(session, self._session, protocol)
        self._since, self._timed, self._last_ms = 0, self._timed + 1, timed.reference_ms
        if self._timed >= _SETTLED and (self.overhead() or 0.0) > MAX_REFERENCE_OVERHEAD:
            self.every += 1  # a wide dense network among narrow ones: time it less often
        return timed.stats, timed.reference_ms, timed.ratio, True

    def overhead(self) -> float | None:
        """The time spent in the reference's timing calls, as a fraction of the rest of this run's time."""
        if self._session is None:
            return None
        spent = self._session.seconds
        rest = time.perf_counter() - self._started - spent
        return round(spent / rest, 3) if rest > 0 else None


class _Stopwatch(Session):
    """A session that adds up the wall time of its timing calls."""

    def __init__(self, inner: Session) -> None:
        self._inner, self.seconds = inner, 0.0

    def time(self, iterations: int) -> np.ndarray:
        started = time.perf_counter()
        try:
            return self._inner.time(iterations)
        finally:
            self.seconds += time.perf_counter() - started

    def close(self) -> None:
        self._inner.close()


def _profile_rows(
    model: nn.Module,
    example: torch.Tensor,
    groups: list[ChannelGroup],
    out: Path,
    meta: dict[str, Any],
    records: list[dict[str, Any]],
    ref: _Reference,
    backend: LatencyBackend,
    protocol: ProtocolConfig,
    sampling: SamplingConfig,
    on_sample: Callable[[int, int], None] | None,
    acquire: Callable[[Profile, int], list[Widths]] | None,
    plan: list[tuple[str, Widths]],
    shard: Shard | None,
) -> None:
    done = (
        {widths_key(w, groups) for w in Profile(out, meta, pd.DataFrame(records)).widths()}
        if records
        else set()
    )
    used = {int(r["sample_id"]) for r in records}

    def add(sample_id: int, kind: str, widths: Widths) -> None:
        """Measure one network and append it atomically; a taken sample id becomes the next free one."""
        sample_id = sample_id if sample_id not in used else max(used) + 1
        sub, _ = pruned_copy(model, example, widths)
        macs, params = count_macs_params(sub, example)
        with backend.session(sub, meta["input_shape"]) as session:
            stats, reference_ms, ratio, beside = ref.measure(session, protocol)
            info = session.info()  # before close: a closed TensorRT session reports no graph
        records.append({
            "sample_id": sample_id,
            "kind": kind,
            **{WIDTH_PREFIX + name: int(w) for name, w in widths.items()},
            "macs": macs,
            "params": params,
            "latency_ms": stats.median_ms,  # corrected in _write_rows
            "raw_ms": stats.median_ms,
            "reference_ms": reference_ms,
            "reference_beside": beside,
            "ratio": ratio,
            "cuda_graph": bool(info["cuda_graph"]),
            "enqueue_bound": info["enqueue_bound"],
            **{k: v for k, v in stats.to_dict().items() if k != "median_ms"},
        })  # fmt: skip
        _write_rows(out, pd.DataFrame(records))
        done.add(widths_key(widths, groups))
        used.add(sample_id)

    mine = range(len(plan)) if shard is None else shard.part(plan)
    total = len(mine) if acquire is None else sampling.samples
    for step, sample_id in enumerate(mine, start=1):
        kind, widths = plan[sample_id]
        if widths_key(widths, groups) not in done:
            add(sample_id, kind, widths)
        if on_sample is not None:
            on_sample(step, total)
    while acquire is not None and len(records) < sampling.samples:
        wanted = sampling.samples - len(records)
        picks: dict[tuple[int, ...], Widths] = {}
        for widths in acquire(Profile(out, meta, pd.DataFrame(records)), wanted):
            key = widths_key(widths, groups)
            if key not in done and len(picks) < wanted:
                picks.setdefault(key, {g.name: int(widths[g.name]) for g in groups})
        if not picks:  # nothing new to measure: stop rather than ask forever
            break
        for widths in picks.values():
            add(max(used, default=-1) + 1, "active", widths)
            if on_sample is not None:
                on_sample(len(records), total)


def corrected(frame: pd.DataFrame) -> pd.DataFrame:
    """``latency_ms`` = ``ratio`` x the profile's reference latency (the median of the reference timings
    beside rows). A row timed beside the reference has the median of its round-pair ratios; one timed
    without it gets ``raw_ms`` over the mean of the reference timings before and after it in the file
    (the one before, for the last rows). A profile measured without any reference keeps raw latency."""
    frame = frame.copy()
    raw = frame["raw_ms"].to_numpy(dtype=float)
    beside = frame["reference_beside"].to_numpy(dtype=bool)
    if not beside.any():
        frame["latency_ms"] = raw
        return frame
    ref = frame["reference_ms"].to_numpy(dtype=float).copy()
    timed = pd.Series(np.where(beside, ref, np.nan))
    ref[~beside] = np.nanmean(np.vstack([timed.ffill(), timed.bfill()])[:, ~beside], axis=0)
    ratio = np.where(beside, frame["ratio"].to_numpy(dtype=float), raw / ref)
    frame["reference_ms"], frame["ratio"] = ref, ratio
    frame["latency_ms"] = ratio * float(np.median(ref[beside]))
    return frame


def _write_rows(out: Path, frame: pd.DataFrame) -> None:
    frame = corrected(frame)
    atomic_write(out, lambda tmp: frame.to_parquet(tmp, index=False))
