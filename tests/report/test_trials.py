from __future__ import annotations

from autoprune.report import TrialPoint, pareto_front, trials_table


def _p(
    number: int, ms: float, acc: float | None, *, measured_ms: float | None = None, chosen: bool = False
) -> TrialPoint:
    return TrialPoint(number, ms, acc, feasible=True, measured_ms=measured_ms, chosen=chosen)


def test_pareto_front_excludes_dominated_points_sorted_by_latency() -> None:
    points = [
        _p(0, 2.0, 0.90),
        _p(1, 1.0, 0.80),
        _p(2, 1.5, 0.70),  # slower and less accurate than 1
        _p(3, 3.0, 0.95),
        _p(4, 3.5, 0.95),  # as accurate as 3, slower
        _p(5, 2.5, 0.85),  # dominated by 0
        _p(6, 0.5, None),  # never trained: ignored
    ]
    assert [p.number for p in pareto_front(points)] == [1, 0, 3]


def test_pareto_front_ties() -> None:
    same_ms = [_p(0, 1.0, 0.7), _p(1, 1.0, 0.8)]  # same latency: the more accurate wins
    assert [p.number for p in pareto_front(same_ms)] == [1]
    exact = [_p(0, 1.0, 0.8), _p(1, 1.0, 0.8), _p(2, 2.0, 0.9)]  # exact ties dominate neither
    assert [p.number for p in pareto_front(exact)] == [0, 1, 2]
    assert pareto_front([]) == []
    assert pareto_front([_p(0, 1.0, None)]) == []


def _rows(table: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]


def test_trials_table_top_n_in_accuracy_order() -> None:
    trials = [_p(i, 1.0 + i / 10, (i * 7 % 11) / 11) for i in range(11)]
    trials += [_p(20, 0.5, None), _p(21, 2.0, 0.5, measured_ms=1.2, chosen=True)]
    rows = _rows(trials_table(trials, top=4, budget_ms=1.5))
    assert len(rows) == 4
    ranked = sorted((t for t in trials if t.accuracy is not None), key=lambda t: -(t.accuracy or 0))
    assert [r[0] for r in rows] == [str(t.number) for t in ranked[:4]]
    accs = [float(r[1].rstrip(" %")) for r in rows]
    assert accs == sorted(accs, reverse=True)
    assert all(r[3] == "-" and r[4] == "-" and r[5] == "" for r in rows)


def test_trials_table_measured_and_chosen_columns() -> None:
    trials = [
        _p(0, 1.0, 0.9, measured_ms=1.6),
        _p(1, 1.1, 0.8, measured_ms=1.4, chosen=True),
        _p(2, 1.2, 0.7),
    ]
    rows = _rows(trials_table(trials, budget_ms=1.5))
    assert [r[0] for r in rows] == ["0", "1", "2"]
    assert [r[3] for r in rows] == ["1.6000", "1.4000", "-"]
    assert [r[4] for r in rows] == ["no", "yes", "-"]
    assert [r[5] for r in rows] == ["", "✓", ""]
    assert [r[4] for r in _rows(trials_table(trials))] == ["-", "-", "-"]  # no budget given


def test_trials_table_keeps_the_searchs_verdict_with_its_noise_margin() -> None:
    at_edge = TrialPoint(
        0, 1.0, 0.9, True, measured_ms=1.49, within_budget=False
    )  # under, but not by the margin
    assert _rows(trials_table([at_edge], budget_ms=1.5))[0][4] == "no"


def test_trials_table_empty() -> None:
    table = trials_table([])
    assert len(table.splitlines()) == 2  # header and rule only
    assert len(trials_table([_p(0, 1.0, None)]).splitlines()) == 2
