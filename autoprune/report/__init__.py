"""Reports: the dense-vs-pruned comparison table (terminal and markdown)."""

from __future__ import annotations

from autoprune.report._table import ModelSummary, comparison_table, markdown_table, write_report

__all__ = ["ModelSummary", "comparison_table", "markdown_table", "write_report"]
