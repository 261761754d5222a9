"""The targets of a search after its first (``--target PREDICTOR:BUDGET``): each one's predictor checked
against the model and the first target's width grid, timed on this machine when its device is here, and
otherwise judged on its predictor's calibrated upper bound (``autoprune.search.targets``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
from torch import Tensor

from autoprune._console import Reporter
from autoprune.api._bound import Bound
from autoprune.config import ProtocolConfig, SearchConfig, TargetSpec
from autoprune.errors import AutopruneError, ConfigError
from autoprune.graph import Widths, dense_widths
from autoprune.latency import Timing, get_backend
from autoprune.latency.compat import difference, mismatch
from autoprune.predictor import LatencyPredictor
from autoprune.search import (
    check_budget,
    profile_frame,
    search_reference,
    space_for,
    strategy_class,
)
from autoprune.search.targets import Target, Timer

# A target whose device is not here is judged on its predictor's upper bound at this confidence, unless
# --budget-confidence says another.
REMOTE_CONFIDENCE = 0.9


def target_name(predictor: str | Path, taken: Sequence[str]) -> str:
    """A target's name in reports and constraints: its predictor file's stem, numbered when taken."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(predictor).stem) or "target"
    name, n = stem, 2
    while name in taken:
        name, n = f"{stem}-{n}", n + 1
    return name


def target_info(predictor: str | Path, lp: LatencyPredictor) -> dict[str, Any]:
    """What the report says a target is: its predictor, backend and its settings, batch, precision."""
    return {
        "predictor": str(predictor),
        "backend": lp.meta.get("backend"),
        "backend_settings": lp.meta.get("backend_settings"),
        "batch": (lp.meta.get("input_shape") or [None])[0],
        "precision": lp.meta.get("precision", "fp32"),
    }


def open_targets(
    config: SearchConfig, *, b: Bound, model: str, study: optuna.Study, first: str, reporter: Reporter,
) -> list[Target]:  # fmt: skip
    """``config.targets`` opened, in order, each failure in one line naming the fix."""
    taken = [first]
    out = []
    for text in config.targets:
        spec = TargetSpec.parse(text)
        name = target_name(spec.predictor, taken)
        taken.append(name)
        out.append(_open(spec, name, config=config, b=b, model=model, study=study, reporter=reporter))
    return out


def _open(
    spec: TargetSpec, name: str, *, config: SearchConfig, b: Bound, model: str, study: optuna.Study,
    reporter: Reporter,
) -> Target:  # fmt: skip
    lp = LatencyPredictor.load(spec.predictor)
    _check(spec, lp, config=config, b=b, model=model)
    dense = dense_widths(b.groups)
    bound, why = _here(lp, b)
    measure: Timer | None = None
    if bound is not None:  # as the first target: the dense network timed now is the budget's frame
        reference = search_reference(study, lambda: bound.time([dense])[0].median_ms, target=name)
        frame, scale = profile_frame(budget_in_ms=spec.budget_ms is not None, reference_ms=reference,
                                     profile_reference_ms=lp.meta.get("reference_ms"))  # fmt: skip
        confidence = config.budget_confidence
        tolerance = bound.tolerance(config.margin)
        measure = _judged(bound, frame, tolerance=tolerance, max_seconds=config.measure_seconds)
        said = "timed on this machine"
    else:  # the profile's own conditions, the predictor's upper bound
        frame, scale, tolerance = float(lp.meta.get("reference_ms") or lp.predict(dense)), 1.0, 0.0
        confidence = config.budget_confidence or REMOTE_CONFIDENCE
        said = f"predicted only, on its upper bound at {confidence:g} ({why})"
    factor = lp.upper_factor(confidence)
    budget_ms = spec.budget_ms if spec.budget_ms is not None else float(spec.budget_ratio or 1.0) * frame
    try:
        check_budget(budget_ms, fastest_ms=scale * lp.narrowest_ms(b.space.narrowest()))
    except AutopruneError as exc:
        raise type(exc)(f"--target {spec}: {exc}") from None
    reporter.log(f"target {name}: budget {budget_ms:.4f} ms, {said}")

    def predict_many(widths: list[Widths]) -> list[float]:
        return [scale * factor * float(v) for v in lp.predict(widths)]

    def latency(fractions: Tensor) -> Tensor:
        return scale * factor * lp.predict_fractions(fractions)

    return Target(
        name, budget_ms, predict_many, measure=measure, latency=latency if lp.differentiable else None,
        tolerance=tolerance, info=target_info(spec.predictor, lp),
        bound="prediction" if measure is not None else f"upper bound at {confidence:g}",
    )  # fmt: skip


def _check(spec: TargetSpec, lp: LatencyPredictor, *, config: SearchConfig, b: Bound, model: str) -> None:
    """Refuse, in one line, a target's predictor that cannot stand beside the first target's."""
    lp.check_model(b.groups, model)
    shape = list(lp.meta["input_shape"])
    if shape[1:] != b.input_shape[1:]:
        raise ConfigError(
            f"--target {spec}: its profile measured inputs of {shape[1:]}, the first target's "
            f"{b.input_shape[1:]}: profile every target at one input size (the batch may differ)"
        )
    grid = space_for(b.groups, lp.meta["sampling"])
    if any(grid.choices(g) != b.space.choices(g) for g in b.groups):
        raise ConfigError(
            f"--target {spec}: its profile's width grid (--min-ratio, --round-to) is not the first "
            "target's: profile every target with the same grid"
        )
    if strategy_class(config.strategy_name).needs_gradients and not lp.differentiable:
        raise ConfigError(
            f"--strategy {config.strategy_name} trains against differentiable latency predictors and "
            f"--target {spec} is a {lp.kind}: fit it with `autoprune fit PROFILE --predictor lpnet`"
        )


def _judged(bound: Bound, frame_ms: float, *, tolerance: float, max_seconds: float) -> Timer:
    """Networks timed beside the dense network on ``bound``'s device, judged in ``frame_ms``."""

    def measure(widths: list[Widths]) -> list[Timing]:
        timings = bound.time_beside_dense(widths, tolerance=tolerance, max_seconds=max_seconds)
        return [t.judged(frame_ms) for t in timings]

    return measure


def _here(lp: LatencyPredictor, b: Bound) -> tuple[Bound | None, str]:
    """The first target's binding on this target's backend, batch and protocol when its device is this
    machine's; else None and why not."""
    try:
        backend = get_backend(lp.meta["backend"], **lp.meta["backend_settings"])
        here = {"device": backend.fingerprint()}
    except (AutopruneError, ImportError, RuntimeError) as exc:
        return None, f"its backend cannot run here: {exc}"
    if mismatch(lp.meta, here, ("device",)):
        return None, f"its profile was measured on {difference('device', lp.meta, here)}"
    protocol = ProtocolConfig.from_dict(lp.meta["protocol"])
    return replace(b, input_shape=list(lp.meta["input_shape"]), backend=backend, protocol=protocol), ""
