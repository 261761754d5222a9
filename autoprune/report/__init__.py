"""Reports: the dense-vs-pruned comparison and search-trials tables (terminal and markdown), PNG plots."""

from __future__ import annotations

from autoprune.report._table import (
    PREDICTOR_HEADER,
    ModelSummary,
    comparison_table,
    markdown_table,
    predictor_rows,
    predictor_table,
    write_report,
)
from autoprune.report._trials import TRIALS_HEADER, TrialPoint, pareto_front, trials_table
from autoprune.report.plots import calibration_plot, curve_plot, pareto_plot, widths_plot
from autoprune.report.sections import fit_section, profile_section

__all__ = [
    "PREDICTOR_HEADER",
    "TRIALS_HEADER",
    "ModelSummary",
    "TrialPoint",
    "calibration_plot",
    "comparison_table",
    "curve_plot",
    "fit_section",
    "markdown_table",
    "pareto_front",
    "pareto_plot",
    "predictor_rows",
    "predictor_table",
    "profile_section",
    "trials_table",
    "widths_plot",
    "write_report",
]
