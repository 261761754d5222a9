"""The latency budget's one owner: resolve it (ms, or a ratio of the dense latency), record it on the
study so a resumed search keeps it, refuse a different one, and judge a measurement against it with a
margin for measurement noise."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import optuna

from autoprune.errors import BudgetError, ConfigError


def search_reference(
    study: optuna.Study, measure_dense: Callable[[], float], *, target: str | None = None
) -> float:
    """The dense network's latency on the device when the study began: what a budget ratio is a ratio
    of, and what converts a drift-corrected profile's latencies to the device's conditions now. Recorded
    on the study, so a resumed search converts as it did (one per ``target`` after the first)."""
    key = "reference_ms" if target is None else f"reference_ms:{target}"
    if key not in study.user_attrs:
        study.set_user_attr(key, float(measure_dense()))
    return float(study.user_attrs[key])


def budget_frame(*, budget_in_ms: bool, reference_ms: float, profile_reference_ms: float | None) -> float:
    """The dense latency a measured ratio (a network's latency over the dense network's timed beside it)
    is converted to ms with, and what the predictor's latencies are put in. For a budget in ms, the
    profile's reference: the device's speed when quiet, so a host busy now neither moves the budget nor
    refuses a network that fits it. For a ratio of the dense latency (or no budget), the dense latency
    the ratio was set against (the study's reference), so a ratio is judged against a ratio."""
    if budget_in_ms and profile_reference_ms:
        return float(profile_reference_ms)
    return float(reference_ms)


def profile_frame(
    *, budget_in_ms: bool, reference_ms: float, profile_reference_ms: float | None
) -> tuple[float, float]:
    """The budget's frame (``budget_frame``) and the scale that puts a profile's latencies in it
    (``reference_scale``): what every run bound to a profile needs, for each of its targets."""
    frame = budget_frame(
        budget_in_ms=budget_in_ms, reference_ms=reference_ms, profile_reference_ms=profile_reference_ms
    )
    return frame, reference_scale(profile_reference_ms=profile_reference_ms, reference_ms=frame)


def reference_scale(*, profile_reference_ms: float | None, reference_ms: float) -> float:
    """What a profile's latencies are multiplied by to be in this search's conditions: the reference
    measured now over the profile's reference (1 for a predictor fit on a profile without one)."""
    return 1.0 if not profile_reference_ms else reference_ms / float(profile_reference_ms)


def resolve_budget(
    study: optuna.Study,
    *,
    budget_ms: float | None,
    budget_ratio: float | None,
    measure_dense: Callable[[], float],
) -> float:
    """The budget in ms. A ratio is taken of the dense latency measured when the study began, and is
    recorded in the study, so a resumed search keeps its budget although a new measurement would differ.
    Neither: ``math.inf``, no latency budget (a search to an accuracy tolerance)."""
    if budget_ms is None and budget_ratio is None:
        return math.inf
    if budget_ms is not None:
        return float(budget_ms)
    ratio = float(budget_ratio or 1.0)
    attrs = study.user_attrs
    if attrs.get("budget_ratio") == ratio and "budget_ms" in attrs:
        return float(attrs["budget_ms"])
    if "budget_ms" not in attrs:  # a new study: record_budget fixes its budget
        study.set_user_attr("budget_ratio", ratio)
    return ratio * measure_dense()


def record_budget(
    study: optuna.Study, budget_ms: float, *, strategy: str, targets: Mapping[str, float] | None = None
) -> bool:
    """Fix the study's budget and strategy (and, searched under several, each target's budget) on its
    first run; refuse a rerun with other ones. Returns True when the study is new."""
    recorded = study.user_attrs.get("budget_ms")  # math.inf (no budget) is stored as JSON Infinity
    mine = {k: float(v) for k, v in (targets or {}).items()}
    if recorded is None:
        study.set_user_attr("budget_ms", float(budget_ms))
        study.set_user_attr("strategy", strategy)
        study.set_user_attr("targets", mine)
        return True
    theirs = study.user_attrs.get("targets", {})
    if set(theirs) != set(mine) or any(not math.isclose(theirs[k], mine[k], rel_tol=1e-9) for k in mine):
        raise ConfigError(
            f"study '{study.study_name}' was run with the targets {_targets(theirs)}, not {_targets(mine)}: "
            "pass --study NEW_NAME (or a new --out) for a new search"
        )
    if not math.isclose(float(recorded), budget_ms, rel_tol=1e-9, abs_tol=1e-9):
        raise ConfigError(
            f"study '{study.study_name}' was run with a budget of {_ms(recorded)}, not {_ms(budget_ms)}: "
            "pass --study NEW_NAME (or a new --out) for a new search"
        )
    ran = study.user_attrs.get("strategy", strategy)
    if ran != strategy:
        raise ConfigError(
            f"study '{study.study_name}' was run with --strategy {ran}, not {strategy}: "
            "pass --study NEW_NAME (or a new --out) for a new search"
        )
    return False


def _targets(budgets: Mapping[str, float]) -> str:
    return ", ".join(f"{k}: {_ms(v)}" for k, v in budgets.items()) if budgets else "(one: the budget alone)"


def _ms(budget_ms: float) -> str:
    return "no budget" if math.isinf(budget_ms) else f"{budget_ms:.4g} ms"


def check_budget(budget_ms: float, *, fastest_ms: float) -> None:
    """Reject up front a budget below the fastest network of the search space."""
    if budget_ms < fastest_ms:
        raise BudgetError(
            f"budget {budget_ms:.4g} ms is below the fastest network in the search space "
            f"({fastest_ms:.4g} ms, the narrowest): raise the budget to at least {fastest_ms:.4g} ms"
        )


def margin_for(spread: float, *, tolerance: float) -> float:
    """The fraction a measurement must stay under the budget by: the larger of the protocol's tolerance
    and the spread this network showed across its interleaved repeats (``spread`` = max/min of the
    repeats' medians), so an independent re-timing of a network accepted at the budget's edge agrees."""
    return max(float(tolerance), float(spread) - 1.0)


def within_budget(measured_ms: float, budget_ms: float, *, margin: float) -> bool:
    return measured_ms * (1.0 + margin) <= budget_ms
