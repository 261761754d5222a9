"""``autoprune search``, in four steps: open the run (check inputs, study, budget), run the strategy
(it proposes networks under the budget; ``screen`` screens then reranks them), measure the finalists on
the device, finish (fine-tune the chosen one, score it once on the test split, save, report)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoprune import training
from autoprune._console import Reporter
from autoprune._killpoint import kill_point
from autoprune.api._search_report import SearchRecord, write_search_outputs
from autoprune.api._search_run import SearchRun, open_search
from autoprune.config import SearchConfig
from autoprune.data import DatasetSplits
from autoprune.graph import count_macs_params
from autoprune.prune import save_pruned
from autoprune.report import ModelSummary, TrialPoint
from autoprune.rundir import release_run_dir
from autoprune.search import (
    Candidate,
    Selection,
    release_storage,
    run_strategy,
    select_by_measurement,
    study_lock,
)
from autoprune.search.strategies.uniform import widest_uniform_measured

_SILENT = Reporter()


@dataclass(frozen=True)
class SearchResult:
    run_dir: Path
    budget_ms: float | None  # None: no latency budget, only ``max_accuracy_drop``
    dense: ModelSummary
    pruned: ModelSummary
    widths: dict[str, int]
    finalists: list[dict[str, Any]]
    pareto_front: list[TrialPoint] = field(default_factory=list)  # feasible trials, fastest first
    sections: dict[str, str] = field(default_factory=dict)
    max_accuracy_drop: float | None = None  # percentage points of validation accuracy


def search(
    model: str,
    *,
    checkpoint: str | Path,
    data: str,
    predictor: str | Path,
    out: str | Path,
    config: SearchConfig,
    storage: str | None = None,
    study: str = "autoprune",
    image_size: int = 32,
    reporter: Reporter = _SILENT,
) -> SearchResult:
    """Search widths under the budget with ``config.strategy``, keep the best-ranked finalist that
    *measures* within it (with a noise margin), fine-tune it and save it to ``out/pruned.pt``.
    Rerunning the same command resumes the study.

    With ``config.max_accuracy_drop`` (a strategy with ``tolerance``: ``playprune``), the candidates are
    the fastest networks whose validation accuracy stays within that many points of the dense network's
    (scored here on the validation split); with no budget as well, the finalist measured fastest wins."""
    run = open_search(
        model, checkpoint=checkpoint, data=data, predictor=predictor, out=out, config=config,
        storage=storage, study=study, image_size=image_size, reporter=reporter,
    )  # fmt: skip
    candidates = run_strategy(  # the strategy's own steps: for ``screen``, screen then rerank
        run.strategy,
        run.problem(),
        study=run.study,
        trials=run.trials,
        on_trial=reporter.task("search trials"),
    )
    return _finish(run, _measure(run, candidates, reporter), data=data, reporter=reporter)


def _measure(run: SearchRun, candidates: list[Candidate], reporter: Reporter) -> Selection:
    """Finalists timed on the device beside the dense network, in the strategy's order, judged on their
    ratio to it; the widest uniform network that measures within the budget when none of them does.
    Their timings are kept in the run directory: a rerun (after a crash in the fine-tune, say) reuses
    them, so each is measured once and the same one is chosen. Workers of one study measure one at a
    time."""
    problem = run.problem()
    with study_lock(run.study):
        selection = select_by_measurement(
            candidates,
            measure=run.finalist_timer(),
            budget_ms=run.budget_ms,
            finalists=run.config.finalists,
            tolerance=run.tolerance,
            last_resort=lambda: widest_uniform_measured(problem, run.study),
        )
    chosen = selection.chosen
    if selection.bias is not None:
        reporter.log(
            f"finalists measured {selection.bias:.3f}x their predicted latency: the rest re-ranked under "
            "the corrected prediction"
        )
    if chosen.last_resort:
        reporter.log("no candidate of the strategy measured within the budget; the widest uniform one did")
    t = chosen.timing
    stability = (
        f", ratio to the dense network spread {100 * (t.spread - 1):.1f} % over {t.repeats} repeats"
        if t is not None and t.ratio is not None
        else ""
    )
    slowdown = run.host_slowdown
    host = f"; host {slowdown:.2f}x the budget's dense latency" if slowdown is not None else ""
    if run.targets.several:
        if run.targets.readings(chosen.candidate.widths) is None:  # the last resort's timing was kept
            run.finalist_timer()([chosen.candidate.widths])
        for row in run.targets.report(chosen.candidate.widths):
            ms = "predicted only" if row["measured_ms"] is None else f"measured {row['measured_ms']:.4f} ms"
            reporter.log(
                f"target {row['target']}: budget {row['budget_ms']:.4f} ms, "
                f"predicted {row['predicted_ms']:.4f} ms, {ms}, margin {100 * (row['margin'] or 0):.1f} %"
            )
    reporter.log(
        f"chosen finalist: {chosen.measured_ms:.4f} ms judged{stability}, needed a margin of "
        f"{100 * chosen.margin:.1f} % (budget {run.budget_ms:.4f} ms{host})"
        if math.isfinite(run.budget_ms)
        else f"chosen finalist: {chosen.measured_ms:.4f} ms judged, the fastest of {len(selection.measured)}"
    )
    return selection


def _finish(run: SearchRun, selection: Selection, *, data: str, reporter: Reporter) -> SearchResult:
    """Fine-tune the chosen network, score it (the test split once), save it and write the report."""
    config, ds, lp, net = run.config, run.ds, run.lp, run.b.net
    chosen, measured = selection.chosen, selection.measured
    pruned = run.prune_candidate(chosen.candidate)
    run.fine_tune(
        pruned.module, config.final_epochs, config.seed, teacher=net if config.distill else None,
        on_step=reporter.task("fine-tune winner"),
    )  # fmt: skip
    kill_point("fine-tuned")  # tests/test_crash.py
    budget_ms = run.budget_ms if math.isfinite(run.budget_ms) else None
    measurement = {
        "frame_ms": run.frame_ms, "host_slowdown": run.host_slowdown,
        "load": max(run.loads) if run.loads else None, "cpus": os.cpu_count(),
        "bias": selection.bias, "reranked_after": selection.reranked, "last_resort": chosen.last_resort,
        "repeats": None if chosen.timing is None else chosen.timing.repeats,
        "ratio_spread": chosen.spread, "measure_seconds": config.measure_seconds,
    }  # fmt: skip
    # Under several targets the chosen one's judged latency is the binding target's, in the first one's
    # frame; the first target's own measurement is what the pruned network's latency is reported as.
    targets = run.targets.report(chosen.candidate.widths) if run.targets.several else None
    measured_ms = chosen.measured_ms if targets is None else float(targets[0]["measured_ms"])
    dense = _summary("dense", net, ds, run.frame_ms, run.b.example)  # its ratio to itself is 1
    final = _summary("pruned", pruned.module, ds, measured_ms, run.b.example)
    pruned.meta = {
        "budget_ms": budget_ms, "max_accuracy_drop": config.max_accuracy_drop, "targets": targets,
        "dense_val_accuracy": dense.accuracy, "measured_ms": measured_ms, "margin": chosen.margin,
        "dense_ms": dense.latency_ms, "reference_ms": run.reference_ms, "profile_scale": run.scale,
        "measurement": measurement,
        "val_accuracy": final.accuracy, "test_accuracy": final.test_accuracy, "strategy": run.strategy.name,
        "augment": run.augment, "backend": lp.meta["backend"], "precision": lp.meta.get("precision", "fp32"),
        "backend_settings": lp.meta["backend_settings"], "device": lp.meta["device"],
    }  # fmt: skip
    save_pruned(run.run_dir / "pruned.pt", pruned)
    record = SearchRecord(
        model=run.model, data=data, strategy=run.strategy.name, trains_trials=run.strategy.evaluates,
        budget_ms=budget_ms, dense=dense, pruned=final, max_accuracy_drop=config.max_accuracy_drop,
        dense_widths=run.dense_widths, widths=pruned.widths, chosen=chosen, measured=measured,
        study=run.study, space=run.b.space, margin_floor=run.tolerance, measurement=measurement,
        targets=targets,
    )  # fmt: skip
    finalists, front, sections = write_search_outputs(run.run_dir, record)
    release_storage(run.storage_url)
    release_run_dir(run.run_dir, "search")
    return SearchResult(
        run.run_dir,
        budget_ms,
        dense,
        final,
        pruned.widths,
        finalists,
        front,
        sections,
        config.max_accuracy_drop,
    )


def _summary(
    name: str, net: nn.Module, ds: DatasetSplits, latency_ms: float, example: torch.Tensor
) -> ModelSummary:
    """Validation and test accuracy (the test split is scored here, once per final model)."""
    macs, params = count_macs_params(net, example)
    return ModelSummary(
        name, latency_ms, training.evaluate(net, ds.val), params, macs, training.evaluate(net, ds.test)
    )
