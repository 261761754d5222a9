"""The finalists a search killed mid-run had measured, kept so that a rerun measures none twice (the
trial it was training is failed and retried by ``workers.fail_dead_claims``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from autoprune._io import write_json
from autoprune.graph import Widths
from autoprune.latency import Timing

Timer = Callable[[list[Widths]], list[Timing]]


def measured_once(timer: Timer, path: Path) -> Timer:
    """``timer`` remembering each batch's timings in ``path`` (JSON, written atomically after each
    batch): a rerun that asks for a batch already timed, say after a crash in the final fine-tune, gets
    the recorded timings, so each finalist is measured once and the same one wins."""
    done: list[dict[str, Any]] = json.loads(path.read_text())["batches"] if path.is_file() else []

    def timed(batch: list[Widths]) -> list[Timing]:
        key = [dict(w) for w in batch]
        for entry in done:  # a batch recorded before timings were dicts is timed again
            if entry["widths"] == key and all(isinstance(t, dict) for t in entry["timings"]):
                return [Timing(**t) for t in entry["timings"]]
        timings = timer(batch)
        done.append({"widths": key, "timings": [asdict(t) for t in timings]})
        write_json(path, {"batches": done})
        return timings

    return timed
