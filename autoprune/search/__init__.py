"""Search for per-group widths under a latency budget: the width grid, the budget, the strategies
(``get_strategy``), the importance criteria and the finalists measured on the device."""

from __future__ import annotations

from autoprune.search.budget import (
    budget_frame,
    check_budget,
    margin_for,
    profile_frame,
    record_budget,
    reference_scale,
    resolve_budget,
    search_reference,
    within_budget,
)
from autoprune.search.criteria import (
    Criterion,
    channel_scores,
    get_criterion,
    list_criteria,
    register_criterion,
)
from autoprune.search.finalists import Measured, Selection, corrected_order, select_by_measurement
from autoprune.search.resume import measured_once
from autoprune.search.run import run_strategy
from autoprune.search.space import WidthSpace, space_for
from autoprune.search.strategies import (
    DenseNetwork,
    SearchProblem,
    SearchStrategy,
    StrategyOption,
    StudySettings,
    get_strategy,
    list_strategies,
    register_strategy,
    strategy_class,
    strategy_options,
)
from autoprune.search.study import (
    Candidate,
    Evaluate,
    Report,
    check_storage,
    finished,
    is_feasible,
    load_start,
    open_study,
    ranked_candidates,
    save_start,
    trial_widths,
)
from autoprune.search.workers import StudyFull, claim, fail_dead_claims, release_storage, study_lock

__all__ = [
    "Candidate",
    "Criterion",
    "DenseNetwork",
    "Evaluate",
    "Measured",
    "Report",
    "SearchProblem",
    "SearchStrategy",
    "Selection",
    "StrategyOption",
    "StudyFull",
    "StudySettings",
    "WidthSpace",
    "budget_frame",
    "channel_scores",
    "check_budget",
    "check_storage",
    "claim",
    "corrected_order",
    "fail_dead_claims",
    "finished",
    "get_criterion",
    "get_strategy",
    "is_feasible",
    "list_criteria",
    "list_strategies",
    "load_start",
    "margin_for",
    "measured_once",
    "open_study",
    "profile_frame",
    "ranked_candidates",
    "record_budget",
    "reference_scale",
    "register_criterion",
    "register_strategy",
    "release_storage",
    "resolve_budget",
    "run_strategy",
    "save_start",
    "search_reference",
    "select_by_measurement",
    "space_for",
    "strategy_class",
    "strategy_options",
    "study_lock",
    "trial_widths",
    "within_budget",
]
