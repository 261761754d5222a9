"""``api.search`` end to end with every strategy on the tiny digits run: the run directory, the
report, the test accuracy, the noise margin, resume and refusal.

Latency comes from a deterministic test double (latency proportional to parameters), registered as a
backend for this module: which finalist a real timing accepts would make these tests depend on the
machine's load."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import optuna
import pytest
from doubles import use_backend

from autoprune import api
from autoprune.config import SearchConfig
from autoprune.data import load_dataset
from autoprune.errors import BudgetError, ConfigError
from autoprune.graph import keep_top
from autoprune.models import load_model
from autoprune.predictor import LatencyPredictor
from autoprune.prune import load_pruned
from autoprune.search import list_strategies, load_start, strategy_class
from autoprune.training import evaluate

QUICK = {"trials": 3, "finetune_epochs": 0.05, "final_epochs": 0.05, "calibration_batches": 2}


def _search(
    run: dict[str, Path], out: Path, predictor: str = "predictor", **settings: object
) -> api.SearchResult:
    config = SearchConfig(**{"budget_ratio": 0.9, **QUICK, **settings})  # type: ignore[arg-type]
    return api.search(
        "resnet20",
        checkpoint=run["checkpoint"],
        data="digits",
        predictor=run[predictor],
        out=out,
        config=config,
    )


@pytest.mark.slow
@pytest.mark.parametrize("strategy", list_strategies())
def test_every_strategy_runs_end_to_end(exact_run: dict[str, Path], tmp_path: Path, strategy: str) -> None:
    # A strategy that prunes to an accuracy tolerance gets one (generous: the budget decides here).
    tolerance = {"max_accuracy_drop": 50.0} if strategy_class(strategy).tolerance else {}
    result = _search(exact_run, tmp_path / strategy, strategy=strategy, **tolerance)
    summary = json.loads((tmp_path / strategy / "search.json").read_text())
    assert summary["strategy"] == strategy
    chosen = [f for f in summary["finalists"] if f["chosen"]]
    assert len(chosen) == 1 and chosen[0]["within_budget"]
    # Accepted with the noise margin, not at the budget's edge.
    assert chosen[0]["measured_ms"] * (1 + chosen[0]["margin"]) <= summary["budget_ms"]
    assert chosen[0]["margin"] >= 0.03
    # The recorded accuracy is the saved network's on the test split.
    saved = load_pruned(tmp_path / strategy / "pruned.pt").module
    test = load_dataset("digits").test
    assert summary["pruned"]["test_accuracy"] == pytest.approx(evaluate(saved, test), abs=1e-6)
    assert result.pruned.test_accuracy == summary["pruned"]["test_accuracy"]
    report = (tmp_path / strategy / "report.md").read_text()
    assert "test accuracy" in report and "margin" in report and "pareto.png" in report
    for png in ("pareto.png", "widths.png"):
        assert (tmp_path / strategy / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_two_objectives_report_a_pareto_front_and_a_rerun_resumes(
    exact_run: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "nsga"
    first = _search(exact_run, out, objectives=2, trials=4)
    assert first.pareto_front, "NSGA-II found no feasible trial"
    latencies = [p.predicted_ms for p in first.pareto_front]
    assert latencies == sorted(latencies)
    trials = json.loads((out / "search.json").read_text())["trials"]
    _search(exact_run, out, objectives=2, trials=4)  # resumed: no trial left to run
    assert json.loads((out / "search.json").read_text())["trials"] == trials >= 4
    with pytest.raises(ConfigError, match="other settings"):
        _search(exact_run, out, strategy="knapsack")


@pytest.mark.slow
def test_the_search_converts_the_profile_to_the_devices_speed_now(
    exact_run: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Profiled at one speed, searched at half of it: the dense network timed at search time rescales the
    predictions, so the finalists' predicted latencies match what they measure now."""
    use_backend(monkeypatch, "counting", "doubles:SlowedBackend")
    result = _search(exact_run, tmp_path / "slowed", strategy="knapsack", budget_ratio=0.6)
    finalists = json.loads((tmp_path / "slowed" / "search.json").read_text())["finalists"]
    for f in finalists:
        assert 0.8 < f["predicted_ms"] / f["measured_ms"] < 1.25, f  # unscaled, they would be about 0.5
    assert result.budget_ms == pytest.approx(0.6 * result.dense.latency_ms)


@pytest.mark.slow
def test_budget_confidence_constrains_the_calibrated_upper_bound(
    exact_run: dict[str, Path], tmp_path: Path
) -> None:
    """With --budget-confidence every trial is predicted, and judged feasible, by the predictor's upper
    bound, not its prediction; here with a random forest: any kind the fit saves has a bound."""
    lp = LatencyPredictor.load(exact_run["rf"])
    margin = math.exp(lp.log_margin(0.95))
    assert margin > 1.001  # the bound differs from the prediction, so the checks below can tell them apart
    result = _search(exact_run, tmp_path / "run", predictor="rf", budget_confidence=0.95, trials=4)
    study = optuna.load_study(study_name="autoprune", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    for trial in study.trials:
        widths = trial.user_attrs["widths"]
        upper = lp.predict_upper(widths, 0.95)
        assert trial.user_attrs["predicted_ms"] == pytest.approx(upper, rel=1e-9)
        assert upper == pytest.approx(margin * lp.predict(widths), rel=1e-9)
        assert trial.user_attrs["evaluated"] == (upper <= result.budget_ms)  # the constraint is the bound
    chosen = next(f for f in result.finalists if f["chosen"])
    assert chosen["predicted_ms"] == pytest.approx(lp.predict_upper(result.widths, 0.95), rel=1e-9)
    assert chosen["predicted_ms"] <= result.budget_ms


@pytest.mark.slow
def test_gates_finalist_is_pruned_from_its_trials_retrained_weights_by_its_gates(
    exact_run: dict[str, Path], tmp_path: Path
) -> None:
    run = tmp_path / "gates"
    result = _search(exact_run, run, strategy="gates", trials=2)
    chosen = next(f for f in json.loads((run / "search.json").read_text())["finalists"] if f["chosen"])
    study = optuna.load_study(study_name="autoprune", storage=f"sqlite:///{run / 'study.db'}")
    attrs = study.trials[chosen["trial"]].user_attrs
    assert attrs["widths"] == result.widths and Path(attrs["start"]).parent == run / "gates"
    dense, _ = load_model("resnet20", checkpoint=exact_run["checkpoint"], num_classes=10)
    _, scores = load_start(attrs["start"], dense)
    pruned = load_pruned(run / "pruned.pt")
    assert pruned.criterion == "gates" and pruned.meta["strategy"] == "gates"
    assert pruned.keep == keep_top(scores, pruned.widths)  # the highest-gated channels, not the l1 ones


@pytest.mark.slow
def test_droppruning_finalist_is_pruned_to_the_channels_its_trial_kept(
    exact_run: dict[str, Path], tmp_path: Path
) -> None:
    run = tmp_path / "drop"
    result = _search(exact_run, run, strategy="droppruning", trials=2,
                     strategy_options={"steps": 2, "p_in": 0.2})  # fmt: skip
    chosen = next(f for f in json.loads((run / "search.json").read_text())["finalists"] if f["chosen"])
    study = optuna.load_study(study_name="autoprune", storage=f"sqlite:///{run / 'study.db'}")
    attrs = study.trials[chosen["trial"]].user_attrs
    assert attrs["widths"] == result.widths and Path(attrs["start"]).parent == run / "droppruning"
    assert len(attrs["step_widths"]) == 2 and attrs["step_widths"][-1] == result.widths
    pruned = load_pruned(run / "pruned.pt")
    assert pruned.criterion == "droppruning" and pruned.meta["strategy"] == "droppruning"
    assert pruned.keep == {k: list(v) for k, v in attrs["keep"].items()}


@pytest.mark.slow
def test_pfp_derives_the_widths_from_eps_and_keeps_channels_by_importance_sampling(
    exact_run: dict[str, Path], tmp_path: Path
) -> None:
    run = tmp_path / "pfp"
    two = {"batches": 2}  # PFP's sensitivities from 2 calibration batches (default 4): half the work
    result = _search(exact_run, run, strategy="pfp", criterion="pfp", strategy_options=two)
    study = optuna.load_study(study_name="autoprune", storage=f"sqlite:///{run / 'study.db'}")
    record = study.user_attrs["pfp"]
    assert record["settings"]["delta"] == 0.1 and record["eps"][0] > 0
    assert result.widths in record["widths"]  # one of the bound's networks, selected by measurement
    chosen = next(f for f in result.finalists if f["chosen"])
    assert chosen["within_budget"] and chosen["predicted_ms"] <= result.budget_ms
    pruned = load_pruned(run / "pruned.pt")
    assert pruned.criterion == "pfp" and pruned.meta["strategy"] == "pfp"
    assert study.trials == []  # nothing trained while searching
    # A rerun with a fixed ε over the budget is refused before any pruning.
    with pytest.raises(BudgetError, match="--pfp-eps"):
        _search(exact_run, tmp_path / "tight", strategy="pfp", strategy_options={**two, "eps": 0.01})


def test_gates_refuse_a_predictor_that_is_not_differentiable_before_any_work(
    exact_run: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="--predictor lpnet"):
        _search(exact_run, tmp_path / "rf", predictor="rf", strategy="gates")
    assert not (tmp_path / "rf").exists()


def _tolerance_search(
    run: dict[str, Path], out: Path, max_drop: float
) -> tuple[api.SearchResult, dict[str, Any]]:
    """Play and Prune with no budget: the strategy left at its default."""
    result = _search(run, out, budget_ratio=None, max_accuracy_drop=max_drop, trials=4, finetune_epochs=0.1)
    return result, json.loads((out / "search.json").read_text())


@pytest.mark.slow
def test_a_tolerance_without_a_budget_gives_the_fastest_network_within_it(
    exact_run: dict[str, Path], tmp_path: Path
) -> None:
    loose, summary = _tolerance_search(exact_run, tmp_path / "loose", 10.0)
    assert summary["strategy"] == "playprune" and summary["budget_ms"] is None
    assert summary["max_accuracy_drop"] == 10.0 and loose.budget_ms is None
    dense_val = summary["dense_val_accuracy"]
    assert dense_val == loose.dense.accuracy
    chosen = [f for f in summary["finalists"] if f["chosen"]]
    assert len(chosen) == 1
    # The chosen network kept its validation accuracy within the tolerance (after its short fine-tune),
    # and is the fastest of the finalists by measurement.
    assert 100 * (dense_val - chosen[0]["val_accuracy_after_short_finetune"]) <= 10.0
    assert chosen[0]["measured_ms"] == min(f["measured_ms"] for f in summary["finalists"])
    assert loose.pruned.latency_ms < loose.dense.latency_ms
    report = (tmp_path / "loose" / "report.md").read_text()
    assert "Accuracy tolerance: 10 points" in report and "within tolerance" in report
    assert "Latency budget" not in report
    # A tighter tolerance, same seed: never a faster network.
    tight, _ = _tolerance_search(exact_run, tmp_path / "tight", 1.0)
    assert tight.pruned.latency_ms >= loose.pruned.latency_ms
    # A rerun resumes the finished game and trains no step again.
    storage = f"sqlite:///{tmp_path / 'loose' / 'study.db'}"
    steps = len(optuna.load_study(study_name="autoprune", storage=storage).trials)
    again, _ = _tolerance_search(exact_run, tmp_path / "loose", 10.0)
    assert len(optuna.load_study(study_name="autoprune", storage=storage).trials) == steps
    assert again.widths == loose.widths


@pytest.mark.slow
def test_screen_reports_what_it_screened_and_the_rerank(exact_run: dict[str, Path], tmp_path: Path) -> None:
    """The default-to-be: many proxy-scored candidates on the budget, a rerank beside uniform, a guard."""
    _search(exact_run, tmp_path / "s", strategy="screen", trials=12, proxy_batches=2, proxy_val=64,
            strategy_options={"rerank": 2})  # fmt: skip
    summary = json.loads((tmp_path / "s" / "search.json").read_text())["summary"]
    assert summary["screened"] == 12 and summary["proxy_s_per_candidate"] > 0
    assert sum(r["uniform"] for r in summary["rerank"]) == 1 and len(summary["rerank"]) >= 2
    assert "uniform" in summary["guard"]
    report = (tmp_path / "s" / "report.md").read_text()
    assert "candidates screened" in report and "Kendall" in report
