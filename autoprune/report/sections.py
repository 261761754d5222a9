"""Report sections built from plain data (the orchestrator passes what each stage produced)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from autoprune.report._table import PREDICTOR_HEADER, markdown_table, predictor_rows


def profile_section(path: object, meta: Mapping[str, Any], latency_ms: Sequence[float]) -> str:
    """Which sub-networks were measured where, and their latency range."""
    device = meta["device"]
    return (
        f"`{path}`: {len(latency_ms)} sub-networks of `{meta['model']}`, input {meta['input_shape']}, "
        f"backend `{meta['backend']}` {meta['backend_settings']}, on {device['cpu']} "
        f"({device['logical_cores']} logical cores). Latency range {min(latency_ms):.4f}–"
        f"{max(latency_ms):.4f} ms (median of round medians, corrected for the host's drift by the dense "
        "network timed beside them).\n"
    )


def fit_section(
    held_out: int, rows: Mapping[str, int], results: Mapping[str, Mapping[str, Any]], chosen: str
) -> str:
    """The predictor comparison the fit ran, and which predictor it saved."""
    return (
        f"{held_out} held-out networks; {rows['used']} of {rows['total']} rows used "
        f"({rows['noisy_left_out']} flagged noisy left out). Saved: {chosen}.\n\n"
        + markdown_table(PREDICTOR_HEADER, predictor_rows(results))
        + "\n"
    )
