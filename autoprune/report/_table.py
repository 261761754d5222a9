"""The dense-vs-pruned comparison, as a rich table for the terminal and as markdown for report.md."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from autoprune._io import write_text


@dataclass(frozen=True)
class ModelSummary:
    name: str
    latency_ms: float
    accuracy: float
    params: int
    macs: int


HEADER = ["model", "median ms", "speed-up", "val accuracy", "params", "MACs", "budget met"]


def comparison_rows(dense: ModelSummary, pruned: ModelSummary, budget_ms: float) -> list[list[str]]:
    rows = []
    for m in (dense, pruned):
        rows.append(
            [
                m.name,
                f"{m.latency_ms:.4f}",
                f"{dense.latency_ms / m.latency_ms:.2f}x",
                f"{100 * m.accuracy:.2f} %",
                f"{m.params / 1e6:.3f} M",
                f"{m.macs / 1e6:.2f} M",
                "yes" if m.latency_ms <= budget_ms else "no",
            ]
        )
    return rows


def comparison_table(dense: ModelSummary, pruned: ModelSummary, budget_ms: float) -> Table:
    table = Table(title=f"dense vs pruned (budget {budget_ms:.4f} ms, by measurement)")
    for i, name in enumerate(HEADER):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in comparison_rows(dense, pruned, budget_ms):
        table.add_row(*row)
    return table


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_report(
    path: str | Path,
    *,
    title: str,
    dense: ModelSummary,
    pruned: ModelSummary,
    budget_ms: float,
    sections: Mapping[str, str],
) -> Path:
    """``report.md``: the comparison table first, then one section per stage."""
    parts = [f"# {title}", "", f"Latency budget: {budget_ms:.4f} ms (checked by measurement).", ""]
    parts += [markdown_table(HEADER, comparison_rows(dense, pruned, budget_ms)), ""]
    for heading, body in sections.items():
        parts += [f"## {heading}", "", body.rstrip(), ""]
    return write_text(path, "\n".join(parts))
