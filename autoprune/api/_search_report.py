"""What a search leaves in its run directory: ``search.json``, ``report.md`` and its two plots."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from autoprune._io import write_json
from autoprune.graph import Widths
from autoprune.report import (
    ModelSummary,
    TrialPoint,
    markdown_table,
    pareto_front,
    pareto_plot,
    trials_table,
    widths_plot,
    write_report,
)
from autoprune.search import Measured, WidthSpace, finished, is_feasible
from autoprune.search.study import accuracy_of


@dataclass(frozen=True)
class SearchRecord:
    model: str
    data: str
    strategy: str
    trains_trials: bool  # the strategy's ``evaluates`` flag
    budget_ms: float | None  # None: no latency budget, only an accuracy tolerance
    dense: ModelSummary
    pruned: ModelSummary
    dense_widths: Widths
    widths: Widths
    chosen: Measured
    measured: list[Measured]
    study: optuna.Study
    space: WidthSpace
    margin_floor: float
    max_accuracy_drop: float | None = None  # percentage points of validation accuracy
    # How the finalists were judged: the budget's frame (the dense latency a ratio is converted with),
    # the host's slowdown against it and its load while they were timed, the predictor's bias they showed.
    measurement: dict[str, Any] | None = None
    # Searched under several targets: per target, budget, prediction, measurement (or predicted only),
    # margin (``Targets.report``). None: one target.
    targets: list[dict[str, Any]] | None = None


def finalist_row(m: Measured, chosen: Measured) -> dict[str, Any]:
    return {
        "trial": m.candidate.trial,
        "pruned_from": m.candidate.start,  # retrained weights (gates), or None: the searched network
        "val_accuracy_after_short_finetune": m.candidate.accuracy,
        "predicted_ms": m.candidate.predicted_ms,
        "measured_ms": m.measured_ms,
        "spread": m.spread,
        "margin": m.margin,
        "within_budget": m.within_budget,
        "chosen": m is chosen,
        "ratio_to_dense": None if m.timing is None else m.timing.ratio,
        "raw_ms": None if m.timing is None else m.timing.raw_ms,  # as timed, on the host as it was then
        "dense_ms_beside": None if m.timing is None else m.timing.reference_ms,
        "repeats": None if m.timing is None else m.timing.repeats,
        "last_resort": m.last_resort,
    }


def trial_points(r: SearchRecord) -> list[TrialPoint]:
    """Every finished trial, plus the finalists of a strategy that trains no trials."""
    measured = {m.candidate.trial: m for m in r.measured if m.candidate.trial is not None}
    points = []
    for t in finished(r.study):
        m = measured.get(t.number)
        trained = (
            r.trains_trials
            and t.state == optuna.trial.TrialState.COMPLETE
            and bool(t.user_attrs.get("evaluated"))
        )
        points.append(
            TrialPoint(
                t.number,
                float(t.user_attrs["predicted_ms"]),
                accuracy_of(t) if trained else None,
                is_feasible(t),
                m.measured_ms if m else None,
                m is r.chosen,
                m.within_budget if m else None,
            )
        )
    for i, m in enumerate(x for x in r.measured if x.candidate.trial is None):
        points.append(
            TrialPoint(
                -1 - i, m.candidate.predicted_ms, None, True, m.measured_ms, m is r.chosen, m.within_budget
            )
        )
    return points


def write_search_outputs(
    run_dir: Path, r: SearchRecord
) -> tuple[list[dict[str, Any]], list[TrialPoint], dict[str, str]]:
    """Write ``search.json`` and ``report.md`` (with the Pareto and widths plots); return the finalist
    rows, the Pareto front of the feasible trials and the report's sections."""
    finalists = [finalist_row(m, r.chosen) for m in r.measured]
    points = trial_points(r)
    front = pareto_front(p for p in points if p.feasible)
    write_json(
        run_dir / "search.json",
        {
            "strategy": r.strategy,
            "budget_ms": r.budget_ms,
            "max_accuracy_drop": r.max_accuracy_drop,
            "dense_val_accuracy": r.dense.accuracy,
            "margin": r.chosen.margin,
            "dense": r.dense.__dict__,
            "pruned": r.pruned.__dict__,
            "widths": r.widths,
            "finalists": finalists,
            "trials": len(r.study.trials),
            "pareto_front": [p.__dict__ for p in front],
            "study": r.study.study_name,
            "summary": r.study.user_attrs.get("summary"),  # the strategy's own account (screen: the rerank)
            "measurement": r.measurement,
            "targets": r.targets,
        },
    )
    title = f"{r.model} on {r.data}, {r.strategy}"
    pareto_plot(run_dir / "pareto.png", points, budget_ms=r.budget_ms, title=title)
    widths_plot(run_dir / "widths.png", r.dense_widths, r.widths, title=f"{r.model}: kept channels per group")
    sections = {"Search": _search_section(r, finalists), "Trials": _trials_section(r, points)}
    if r.targets:
        sections["Targets"] = _targets_section(r.targets)
    summary = r.study.user_attrs.get("summary")
    if summary and summary.get("rerank"):
        sections["Rerank"] = _rerank_section(summary)
    write_report(
        run_dir / "report.md",
        title=f"autoprune: {title}",
        dense=r.dense,
        pruned=r.pruned,
        budget_ms=r.budget_ms,
        max_accuracy_drop=r.max_accuracy_drop,
        sections=sections,
    )
    return finalists, front, sections


def _search_section(r: SearchRecord, finalists: list[dict[str, Any]]) -> str:
    rows = [
        [
            "-" if f["trial"] is None else str(f["trial"]),
            "-" if f["val_accuracy_after_short_finetune"] is None
            else f"{100 * f['val_accuracy_after_short_finetune']:.2f} %",
            f"{f['predicted_ms']:.4f}", f"{f['measured_ms']:.4f}", f"{100 * (f['spread'] - 1):.1f} %",
            f"{100 * f['margin']:.1f} %", "yes" if f["within_budget"] else "no", "✓" if f["chosen"] else "",
        ]
        for f in finalists
    ]  # fmt: skip
    table = markdown_table(
        ["trial", "accuracy (short fine-tune)", "predicted ms", "measured ms", "spread", "margin",
         "within budget", "chosen"], rows,
    )  # fmt: skip
    if r.budget_ms is None:
        rule = (
            f"Finalists, measured interleaved with the dense network. There is no latency budget: every "
            f"candidate kept its validation accuracy within {r.max_accuracy_drop:g} points of the dense "
            f"network's ({100 * r.dense.accuracy:.2f} %), and the one measured fastest is chosen."
        )
    else:
        rule = (
            "Finalists, each timed round for round beside the dense network and judged on the median of "
            "its ratio to it, converted to ms with the dense latency the budget refers to"
            f"{_frame(r.measurement)}. A finalist is within budget when that latency × (1 + margin) ≤ "
            f"{r.budget_ms:.4f} ms; the margin is the larger of {100 * r.margin_floor:.1f} % (the "
            "protocol's tolerance, or --margin) and the spread of its ratio over the repeats. The chosen "
            f"network needed a margin of {100 * r.chosen.margin:.1f} %.{_learnt(r.measurement)}"
        )
    return (
        f"Strategy `{r.strategy}`, Optuna study `{r.study.study_name}` ({len(r.study.trials)} trials; "
        f"open it with `optuna-dashboard sqlite:///{Path('<run dir>') / 'study.db'}`).\n\n"
        f"{rule}\n\n{table}\n\n![Pareto plot](pareto.png)\n\n![widths](widths.png)\n"
    )


def _targets_section(targets: list[dict[str, Any]]) -> str:
    """Per target: what it is, its budget, the chosen network's prediction, measurement and margin."""
    rows = [
        [
            t["target"], f"{t['backend']} batch {t['batch']}", f"{t['budget_ms']:.4f}",
            f"{t['predicted_ms']:.4f}",
            "predicted only" if t["measured_ms"] is None else f"{t['measured_ms']:.4f}",
            "-" if t["margin"] is None else f"{100 * t['margin']:.1f} %",
            "-" if t["slack"] is None else f"{100 * t['slack']:.1f} %",
            {True: "yes", False: "no", None: "-"}[t["within_budget"]],
        ]
        for t in targets
    ]  # fmt: skip
    table = markdown_table(
        ["target", "device", "budget ms", "predicted ms", "measured ms", "margin", "budget left", "within"],
        rows,
    )
    remote = [t["target"] for t in targets if t["measured_ms"] is None]
    said = (
        f" **{', '.join(remote)}: not timed** — the device is not this machine's; judged on the predictor's "
        "upper bound (`judged_on` in search.json), with no measurement behind it."
        if remote
        else ""
    )
    return (
        "The network must meet every target's budget. Each target this machine can time was measured as the "
        "first one is (beside its dense network, with its own margin); the first target's is the latency "
        f"reported above.{said}\n\n{table}\n"
    )


def _frame(m: dict[str, Any] | None) -> str:
    if not m or m.get("frame_ms") is None:
        return ""
    host = m.get("host_slowdown")
    load = m.get("load")
    said = f" ({m['frame_ms']:.4f} ms"
    if host is not None:
        said += f"; the dense network measured {host:.2f}x that beside the finalists"
    if load is not None:
        said += f", the host's load average {load:.2f} on {m.get('cpus')} logical CPUs"
    return said + ")"


def _learnt(m: dict[str, Any] | None) -> str:
    if not m:
        return ""
    said = ""
    if m.get("bias") is not None:
        said += (
            f" Finalists measured {m['bias']:.3f}x their predicted latency: the candidates left were "
            "re-ranked under the corrected prediction."
        )
    if m.get("last_resort"):
        said += " None of the strategy's candidates measured within the budget; the widest uniform one did."
    return said


def _trials_section(r: SearchRecord, points: list[TrialPoint]) -> str:
    if not r.trains_trials:
        return (
            f"Strategy `{r.strategy}` fine-tunes no network per trial: its candidates are ranked by the "
            "strategy (`screen`: by the proxy, then the rerank below).\n"
        )
    return trials_table(points, top=10, budget_ms=r.budget_ms) + "\n"


def _rerank_section(summary: dict[str, Any]) -> str:
    """``screen``: candidates screened, the proxy's cost and rank agreement, the rerank table, the guard."""
    rows = summary["rerank"]
    keys = [k for k in rows[0] if k.startswith("val_after_")]
    table = markdown_table(
        [
            "network",
            "proxy",
            "predicted ms",
            *[k.replace("val_after_", "val after ").replace("_", " ") for k in keys],
        ],
        [
            [
                "uniform" if row["uniform"] else f"candidate {i}",
                f"{-row['proxy']:.3f}",
                f"{row['predicted_ms']:.4f}",
                *["-" if row[k] is None else f"{100 * row[k]:.2f} %" for k in keys],
            ]
            for i, row in enumerate(rows, 1)
        ],
    )
    per = summary.get("proxy_s_per_candidate")
    tau = summary.get("rank_agreement")
    share = summary.get("budget_share_median")
    return (
        f"{summary['screened']} candidates screened ({summary['distinct']} distinct networks), "
        f"{'-' if per is None else f'{per:.2f}'} s of proxy per candidate, median budget share "
        f"{'-' if share is None else f'{100 * share:.1f} %'}; the proxy's rank agreement with the first "
        f"fine-tune (Kendall tau): {'-' if tau is None else f'{tau:.2f}'}.\n\n{table}\n\n{summary['guard']}."
    )
