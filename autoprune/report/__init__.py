"""Reports: the dense-vs-pruned comparison table (terminal and markdown) and PNG plots."""

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
from autoprune.report.plots import calibration_plot, curve_plot

__all__ = [
    "PREDICTOR_HEADER",
    "ModelSummary",
    "calibration_plot",
    "comparison_table",
    "curve_plot",
    "markdown_table",
    "predictor_rows",
    "predictor_table",
    "write_report",
]
