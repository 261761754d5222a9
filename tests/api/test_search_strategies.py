"""``api.search`` end to end with every strategy on the tiny digits run: the run directory, the
report, the test accuracy, the noise margin, resume and refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoprune import api
from autoprune.config import SearchConfig
from autoprune.errors import ConfigError
from autoprune.search import list_strategies

QUICK = {"trials": 3, "finetune_epochs": 0.05, "final_epochs": 0.05, "calibration_batches": 2}


def _search(tiny_run: dict[str, Path], out: Path, **settings: object) -> api.SearchResult:
    config = SearchConfig(**{"budget_ratio": 0.9, **QUICK, **settings})  # type: ignore[arg-type]
    return api.search(
        "resnet20",
        checkpoint=tiny_run["checkpoint"],
        data="digits",
        predictor=tiny_run["predictor"],
        out=out,
        config=config,
    )


@pytest.mark.slow
@pytest.mark.parametrize("strategy", list_strategies())
def test_every_strategy_runs_end_to_end(tiny_run: dict[str, Path], tmp_path: Path, strategy: str) -> None:
    result = _search(tiny_run, tmp_path / strategy, strategy=strategy)
    summary = json.loads((tmp_path / strategy / "search.json").read_text())
    assert summary["strategy"] == strategy
    chosen = [f for f in summary["finalists"] if f["chosen"]]
    assert len(chosen) == 1 and chosen[0]["within_budget"]
    # Accepted with the noise margin, not at the budget's edge.
    assert chosen[0]["measured_ms"] * (1 + chosen[0]["margin"]) <= summary["budget_ms"]
    assert chosen[0]["margin"] >= 0.03
    assert 0.0 <= summary["pruned"]["test_accuracy"] <= 1.0 and result.pruned.test_accuracy is not None
    report = (tmp_path / strategy / "report.md").read_text()
    assert "test accuracy" in report and "margin" in report and "pareto.png" in report
    for png in ("pareto.png", "widths.png"):
        assert (tmp_path / strategy / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_two_objectives_report_a_pareto_front_and_a_rerun_resumes(
    tiny_run: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "nsga"
    first = _search(tiny_run, out, objectives=2, trials=4)
    assert first.pareto_front, "NSGA-II found no feasible trial"
    latencies = [p.predicted_ms for p in first.pareto_front]
    assert latencies == sorted(latencies)
    trials = json.loads((out / "search.json").read_text())["trials"]
    _search(tiny_run, out, objectives=2, trials=4)  # resumed: no trial left to run
    assert json.loads((out / "search.json").read_text())["trials"] == trials == 4
    with pytest.raises(ConfigError, match="other settings"):
        _search(tiny_run, out, strategy="knapsack")
