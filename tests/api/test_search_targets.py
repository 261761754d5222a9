"""``api.search`` under several targets (``--target``) end to end on the tiny digits run: each target is
met, timed where its device is here and judged on its predictor's upper bound where it is not, and the
report and ``search.json`` say which, per target.

Latency comes from the deterministic ``counting`` double (latency proportional to parameters), so which
finalist is accepted does not depend on the machine's load; the second target is the same law at batch
2 under a tighter budget, so it is the one that binds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from doubles import use_backend

from autoprune import api
from autoprune.config import FitConfig, ProtocolConfig, SamplingConfig, SearchConfig
from autoprune.errors import BindingError, BudgetError, ConfigError
from autoprune.predictor import LatencyPredictor
from autoprune.prune import load_pruned

QUICK = {"trials": 2, "finetune_epochs": 0.05, "final_epochs": 0.05, "calibration_batches": 2}


@pytest.fixture(scope="module")
def second(exact_run: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """The exact run plus a profile and predictor of the same network at batch 2 (``batch2.pt``), and a
    copy of that predictor whose profile says it came from another machine (``elsewhere.pt``)."""
    root = tmp_path_factory.mktemp("second_target")
    with pytest.MonkeyPatch.context() as mp:
        use_backend(mp, "counting", "doubles:CountingBackend")
        protocol = ProtocolConfig(warmup_ms=0.0, iterations=2, min_round_ms=0.0, rounds=1)
        api.profile("resnet20", out=root / "batch2.parquet", checkpoint=exact_run["checkpoint"],
                    backend="counting", input_shape=(2, 3, 32, 32), sampling=SamplingConfig(samples=24),
                    protocol=protocol)  # fmt: skip
        api.fit(root / "batch2.parquet", out=root / "batch2.pt", config=FitConfig(epochs=300, folds=0))
        payload = torch.load(root / "batch2.pt", weights_only=True)
        payload["meta"]["device"] = {**payload["meta"]["device"], "cpu": "a GPU server's CPU"}
        torch.save(payload, root / "elsewhere.pt")
        yield {**exact_run, "batch2": root / "batch2.pt", "elsewhere": root / "elsewhere.pt"}


@pytest.fixture()
def counting(monkeypatch: pytest.MonkeyPatch) -> None:
    use_backend(monkeypatch, "counting", "doubles:CountingBackend")


def _search(run: dict[str, Path], out: Path, *targets: str, **settings: object) -> api.SearchResult:
    config = SearchConfig(**{"budget_ratio": 0.9, **QUICK, "targets": targets, **settings})  # type: ignore[arg-type]
    return api.search(
        "resnet20",
        checkpoint=run["checkpoint"],
        data="digits",
        predictor=run["predictor"],
        out=out,
        config=config,
    )


@pytest.mark.usefixtures("counting")
def test_every_target_is_measured_and_met(second: dict[str, Path], tmp_path: Path) -> None:
    strategy = "uniform"  # every strategy's constraints under two targets: tests/contracts/strategy.py
    out = tmp_path / "run"
    s = _search(second, out, f"{second['batch2']}:60%", strategy=strategy)
    record = json.loads((out / "search.json").read_text())
    first, other = record["targets"]
    assert first["target"] == "predictor" and other["target"] == "batch2"
    assert other["batch"] == 2 and other["judged_on"] == "measurement"
    for t in (first, other):
        assert t["measured_ms"] is not None and t["within_budget"] is True
        assert t["measured_ms"] * (1 + t["margin"]) <= t["budget_ms"] * (1 + 1e-9)
    # The second budget is the tighter one (60 % against 90 % of the same law): it binds.
    assert other["slack"] < first["slack"]
    assert other["measured_ms"] / other["budget_ms"] > 0.5  # its budget used, not far below it
    assert (out / "finalists-batch2.json").is_file()
    assert load_pruned(out / "pruned.pt").meta["targets"] == record["targets"]
    assert s.pruned.latency_ms == pytest.approx(first["measured_ms"])
    report = (out / "report.md").read_text()
    assert "## Targets" in report and "batch2" in report
    # A rerun resumes the same study under the same targets, and refuses other ones.
    again = _search(second, out, f"{second['batch2']}:60%", strategy=strategy)
    assert again.widths == s.widths
    with pytest.raises(ConfigError, match="other settings"):
        _search(second, out, f"{second['batch2']}:50%", strategy=strategy)


@pytest.mark.usefixtures("counting")
def test_a_target_of_another_machine_is_judged_on_its_upper_bound(
    second: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    _search(second, out, f"{second['elsewhere']}:60%", strategy="uniform")
    first, other = json.loads((out / "search.json").read_text())["targets"]
    assert first["measured_ms"] is not None
    assert other["measured_ms"] is None and other["judged_on"].startswith(
        "predicted only: upper bound at 0.9"
    )
    lp = LatencyPredictor.load(second["elsewhere"])
    assert other["predicted_ms"] >= lp.predict(
        load_pruned(out / "pruned.pt").widths
    )  # the bound, not the mean
    assert other["within_budget"] is True and other["predicted_ms"] <= other["budget_ms"]
    assert "not timed" in (out / "report.md").read_text()
    assert not (out / "finalists-elsewhere.json").exists()


@pytest.mark.usefixtures("counting")
def test_a_target_that_does_not_fit_the_first_is_refused(second: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(BudgetError, match=r"--target .*batch2\.pt:1e-06ms: budget 1e-06 ms is below"):
        _search(second, tmp_path / "a", f"{second['batch2']}:0.000001ms")
    with pytest.raises(BindingError, match="does not exist"):
        _search(second, tmp_path / "b", f"{tmp_path / 'missing.pt'}:50%")
