from __future__ import annotations

import json

import pytest

from autoprune.config import FitConfig, ProtocolConfig, SamplingConfig, SearchConfig, TrainConfig
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
    ],
)
def test_round_trip_through_json(config) -> None:  # type: ignore[no-untyped-def]
    assert type(config).from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_validation() -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        SearchConfig()
    with pytest.raises(ConfigError, match="exactly one"):
        SearchConfig(budget_ms=1.0, budget_ratio=0.5)
    with pytest.raises(ConfigError, match="samples"):
        SamplingConfig(samples=1)
    with pytest.raises(ConfigError, match="no settings"):
        TrainConfig.from_dict({"epochs": 1, "nope": 2})
