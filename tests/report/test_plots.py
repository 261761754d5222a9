from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest

from autoprune.report import TrialPoint, pareto_plot, widths_plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    import matplotlib.image as mpimg

    height, width = mpimg.imread(path).shape[:2]
    assert 300 <= width <= 3000 and 200 <= height <= 3000
    assert not list(path.parent.glob(f".{path.name}.*"))  # no temp file left behind


def _search(n: int = 60, budget: float = 1.0) -> list[TrialPoint]:
    rng = random.Random(0)
    trials = []
    for i in range(n):
        ms = rng.uniform(0.4, 1.6)
        trained = ms <= budget * 1.1
        acc = min(0.99, 0.5 + 0.4 * ms + rng.uniform(-0.1, 0.05)) if trained else None
        trials.append(TrialPoint(i, ms, acc, feasible=ms <= budget))
    best = sorted((t for t in trials if t.feasible and t.accuracy), key=lambda t: -(t.accuracy or 0))[:4]
    measured = {t.number: t.predicted_ms * rng.uniform(0.9, 1.15) for t in best}
    chosen = max((n for n, ms in measured.items() if ms <= budget), key=lambda n: trials[n].accuracy or 0)
    return [replace(t, measured_ms=measured.get(t.number), chosen=t.number == chosen) for t in trials]


def test_pareto_plot_writes_png(tmp_path: Path) -> None:
    path = pareto_plot(tmp_path / "pareto.png", _search(), budget_ms=1.0, title="resnet20: trials")
    assert path == tmp_path / "pareto.png"
    _check_png(path)


@pytest.mark.parametrize(
    "trials",
    [
        [],
        [TrialPoint(0, 1.0, 0.8, feasible=True)],
        [TrialPoint(0, 2.0, None, feasible=False)],
        [TrialPoint(0, 2.0, 0.7, feasible=False), TrialPoint(1, 3.0, None, feasible=False)],  # none feasible
        [TrialPoint(0, 0.8, 0.7, feasible=True), TrialPoint(1, 0.9, 0.75, feasible=True)],  # none measured
        [TrialPoint(0, 0.8, 0.7, feasible=True, measured_ms=1.3)],  # measured over budget, none chosen
    ],
    ids=["empty", "one", "one-untrained", "none-feasible", "none-measured", "none-chosen"],
)
def test_pareto_plot_edge_cases(tmp_path: Path, trials: list[TrialPoint]) -> None:
    _check_png(pareto_plot(tmp_path / "p.png", trials, budget_ms=1.0, title="edge"))


def test_widths_plot_many_long_groups(tmp_path: Path) -> None:
    names = [f"layer{s}.{b}.conv1 -> layer{s}.{b}.bn1 (residual block)" for s in (1, 2, 3) for b in range(10)]
    dense = {name: 16 * (1 + i // 10) for i, name in enumerate(names)}
    chosen = {k: max(1, v * (i % 5 + 1) // 5) for i, (k, v) in enumerate(dense.items())}
    _check_png(widths_plot(tmp_path / "widths.png", dense, chosen, title="resnet56: widths"))


def test_widths_plot_partial_and_empty(tmp_path: Path) -> None:
    _check_png(widths_plot(tmp_path / "a.png", {"stem": 16, "stage1": 32}, {"stage1": 8}, title="partial"))
    _check_png(widths_plot(tmp_path / "b.png", {}, {}, title="empty"))
