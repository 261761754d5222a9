"""Search for per-group widths under a latency budget: space, Optuna strategy, criteria, finalists."""

from __future__ import annotations

from autoprune.search.criteria import channel_scores, get_criterion, list_criteria, register_criterion
from autoprune.search.finalists import Measured, check_budget, select_by_measurement
from autoprune.search.optuna_strategy import Candidate, open_study, ranked_candidates, run_search
from autoprune.search.space import WidthSpace, space_for

__all__ = [
    "Candidate",
    "Measured",
    "WidthSpace",
    "channel_scores",
    "check_budget",
    "get_criterion",
    "list_criteria",
    "open_study",
    "ranked_candidates",
    "register_criterion",
    "run_search",
    "select_by_measurement",
    "space_for",
]
