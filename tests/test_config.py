from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoprune.config import AdaptConfig, FitConfig, ProtocolConfig, SamplingConfig, SearchConfig, TrainConfig
from autoprune.errors import ConfigError


@pytest.mark.parametrize(
    "config",
    [
        TrainConfig(epochs=3),
        ProtocolConfig(rounds=5),
        SamplingConfig(samples=9),
        FitConfig(hidden=8),
        FitConfig(compare=("lpnet", "flops"), folds=0),
        SearchConfig(budget_ratio=0.5, trials=4),
        SearchConfig(max_accuracy_drop=0.5),
    ],
)
def test_round_trip_through_json(config) -> None:  # type: ignore[no-untyped-def]
    assert type(config).from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_validation() -> None:
    with pytest.raises(ConfigError, match=r"--budget-ms X or --budget-ratio R.*--max-accuracy-drop P"):
        SearchConfig()
    with pytest.raises(ConfigError, match="not both"):
        SearchConfig(budget_ms=1.0, budget_ratio=0.5)
    for drop in (0.0, -1.0, 100.0):
        with pytest.raises(ConfigError, match=r"--max-accuracy-drop .* \(0, 100\)"):
            SearchConfig(max_accuracy_drop=drop)
    with pytest.raises(ConfigError, match="samples"):
        SamplingConfig(samples=1)
    with pytest.raises(ConfigError, match="no settings"):
        TrainConfig.from_dict({"epochs": 1, "nope": 2})


def test_the_default_strategy_is_playprune_with_a_tolerance_and_optuna_without() -> None:
    assert SearchConfig(budget_ratio=0.5).strategy == "optuna"
    assert SearchConfig(max_accuracy_drop=0.5).strategy == "playprune"
    assert SearchConfig(max_accuracy_drop=0.5, budget_ms=2.0).strategy == "playprune"
    assert SearchConfig(max_accuracy_drop=0.5, strategy="optuna").strategy == "optuna"  # refused by it
    recorded = SearchConfig(max_accuracy_drop=0.5).to_dict()
    assert recorded["strategy"] == "playprune" and recorded["max_accuracy_drop"] == 0.5


@pytest.mark.parametrize("config", [SearchConfig, AdaptConfig])
def test_negative_zero_and_out_of_range_budgets_are_refused(config: type) -> None:
    for bad in (0.0, -1.0):
        with pytest.raises(ConfigError, match="--budget-ms must be > 0"):
            config(budget_ms=bad)
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ConfigError, match=r"--budget-ratio must be in \(0, 1\]"):
            config(budget_ratio=bad)


def test_a_run_directory_records_its_settings_version_and_refuses_one_it_cannot_read(tmp_path: Path) -> None:
    from autoprune.rundir import CONFIG_VERSION, claim_run_dir

    claim_run_dir(tmp_path, "search", {"seed": 0})
    recorded = json.loads((tmp_path / "config.search.json").read_text())
    assert recorded == {"version": CONFIG_VERSION, "seed": 0}
    claim_run_dir(tmp_path, "search", {"seed": 0})  # the same run again: resumed
    with pytest.raises(ConfigError, match="other settings"):
        claim_run_dir(tmp_path, "search", {"seed": 1})
    (tmp_path / "config.search.json").write_text(json.dumps({"seed": 0}))  # before versions: version 1
    claim_run_dir(tmp_path, "search", {"seed": 0})
    (tmp_path / "config.search.json").write_text(json.dumps({"version": CONFIG_VERSION + 1, "seed": 0}))
    with pytest.raises(ConfigError, match=r"newer autoprune .*upgrade autoprune, or pass a new --out"):
        claim_run_dir(tmp_path, "search", {"seed": 0})
