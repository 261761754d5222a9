"""``autoprune profile``: measure sub-networks on this device (and its lookup table), all of the plan or
one shard of it; ``autoprune profile --merge``: join the shards into one profile."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from autoprune._console import Reporter
from autoprune.config import ProtocolConfig, SamplingConfig
from autoprune.errors import ConfigError
from autoprune.graph import ChannelGraph
from autoprune.latency import (
    LatencyBackend,
    Profile,
    default_profile_path,
    get_backend,
    lut_path,
    profile_lut,
    profile_model,
)
from autoprune.latency.lut import check_grid
from autoprune.latency.merge import merge_profiles as _merge
from autoprune.latency.shard import ACTIVE_SHARD, Shard
from autoprune.models import check_forward, load_model
from autoprune.predictor import ActiveAcquirer, Features, layers_of

_SILENT = Reporter()


def profile(
    model: str,
    *,
    out: str | Path | None = None,
    checkpoint: str | Path | None = None,
    num_classes: int | None = None,
    input_shape: Sequence[int] = (1, 3, 32, 32),
    backend: str = "onnxruntime",
    backend_options: dict[str, Any] | None = None,
    sampling: SamplingConfig = SamplingConfig(),
    protocol: ProtocolConfig = ProtocolConfig(),
    lut_grid: int | None = None,
    active: bool = False,
    budget_ms: float | None = None,
    active_initial: int = 20,
    active_batch: int = 10,
    profiles_dir: str | Path = "latency_profiles",
    shard: str | Shard | None = None,
    reporter: Reporter = _SILENT,
) -> Profile:
    """Measure sub-networks of ``model`` on this machine and append them to the profile ``out``
    (default: under ``profiles_dir``, see :func:`autoprune.latency.default_profile_path`). With
    ``lut_grid``, also measure the per-layer lookup table beside it (``<profile>.lut.parquet``).
    With ``active``, the planned networks stop after ``active_initial``; the rest are chosen
    ``active_batch`` at a time where an LPNet ensemble fit on what is measured disagrees most (near
    ``budget_ms`` when given). With ``shard`` ("I/N"), only every N-th planned network from the I-th on
    is measured (:mod:`autoprune.latency.shard`); :func:`merge_profiles` joins the N shards."""
    if budget_ms is not None and not active:
        raise ConfigError("--budget-ms steers active profiling: add --active, or drop --budget-ms")
    if lut_grid is not None:
        check_grid(lut_grid)  # before any network is measured
    part = _check_shard(shard, sampling=sampling, active=active, lut=lut_grid is not None)
    net, classes = load_model(model, checkpoint=checkpoint, num_classes=num_classes)
    check_forward(net, model, input_shape)
    timer = get_backend(backend, **(backend_options or {}))
    acquire = (
        _acquirer(net, input_shape, sampling, budget_ms=budget_ms, batch=active_batch) if active else None
    )
    if out is None:
        out = _default_out(profiles_dir, model, timer, input_shape, part)
    prof = profile_model(
        net,
        model_spec=model,
        num_classes=classes,
        input_shape=input_shape,
        backend=timer,
        sampling=sampling,
        protocol=protocol,
        out=out,
        on_sample=reporter.task(f"profile {model}"),
        acquire=acquire,
        initial=active_initial,
        shard=part,
    )
    if lut_grid is not None:
        profile_lut(
            net,
            model_spec=model,
            input_shape=input_shape,
            backend=timer,
            protocol=protocol,
            sampling=sampling,
            out=lut_path(prof.path),
            grid=lut_grid,
            on_sample=reporter.task(f"lookup table {model}"),
        )
    return prof


def _acquirer(
    net: torch.nn.Module, input_shape: Sequence[int], sampling: SamplingConfig, *, budget_ms: float | None,
    batch: int,
) -> ActiveAcquirer:  # fmt: skip
    """Active profiling's chooser of the next networks, on ``net``'s channel groups and layers."""
    groups = ChannelGraph(copy.deepcopy(net), torch.zeros(1, *input_shape[1:])).groups
    features = Features(groups, layers_of(net, input_shape, groups))
    return ActiveAcquirer(features, budget_ms=budget_ms, batch=batch, seed=sampling.seed)


def _default_out(
    profiles_dir: str | Path,
    model: str,
    timer: LatencyBackend,
    input_shape: Sequence[int],
    part: Shard | None,
) -> Path:
    """The profile's path under ``profiles_dir``; a shard's is its own (never the whole profile's name:
    an unsharded run there would refuse it)."""
    out = default_profile_path(profiles_dir, model=model, backend=timer, input_shape=input_shape)
    return out if part is None else out.with_name(f"{out.stem}__shard{part.index}of{part.count}{out.suffix}")


def _check_shard(
    shard: str | Shard | None, *, sampling: SamplingConfig, active: bool, lut: bool
) -> Shard | None:
    """The shard to measure, or a one-line ConfigError before anything is loaded or measured."""
    if shard is None:
        return None
    part = Shard.parse(shard)
    if active:
        raise ConfigError(ACTIVE_SHARD)
    if lut:
        raise ConfigError(
            "--lut is measured once, not in shards: drop --lut, merge the shards, then run the same "
            "command with --lut --out MERGED.parquet and no --shard (it measures only the lookup table)"
        )
    if part.count > sampling.samples:
        raise ConfigError(
            f"--shard {part} splits {sampling.samples} networks into more shards than networks: "
            f"use at most --shard I/{sampling.samples}, or more --samples"
        )
    return part


def merge_profiles(shards: Sequence[str | Path], *, out: str | Path, partial: bool = False) -> Profile:
    """Join profiles measured with ``shard`` 1/N ... N/N on identical devices into one profile ``out``,
    which ``fit`` reads like an unsharded one. Shards of another device, settings or split are refused,
    naming what differs; so are missing shards and networks, unless ``partial``. Nothing is written
    when a check fails."""
    return _merge(shards, out=out, partial=partial)
