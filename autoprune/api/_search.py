"""``autoprune search``, in four steps: open the run (check inputs, study, budget), run the strategy
(it proposes networks under the budget; ``screen`` screens then reranks them), measure the finalists on
the device, finish (fine-tune the chosen one, score it once on the test split, save, report)."""

from __future__ import annotations

import math
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
    Measured,
    measured_once,
    release_storage,
    run_strategy,
    select_by_measurement,
    study_lock,
)

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
    chosen, measured = _measure(run, candidates, reporter)
    return _finish(run, chosen, measured, data=data, reporter=reporter)


def _measure(
    run: SearchRun, candidates: list[Candidate], reporter: Reporter
) -> tuple[Measured, list[Measured]]:
    """Finalists timed on the device beside the dense network, in the strategy's order. Their timings are
    kept in the run directory: a rerun (after a crash in the fine-tune, say) reuses them, so each is
    measured once and the same one is chosen. Workers of one study measure one at a time."""
    with study_lock(run.study):
        chosen, measured = select_by_measurement(
            candidates,
            measure=run.beside_dense(measured_once(run.timed, run.run_dir / "finalists.json")),
            budget_ms=run.budget_ms,
            finalists=run.config.finalists,
            tolerance=run.tolerance,
        )
    reporter.log(
        f"chosen finalist: {chosen.measured_ms:.4f} ms measured, needed a margin of "
        f"{100 * chosen.margin:.1f} % (budget {run.budget_ms:.4f} ms)"
        if math.isfinite(run.budget_ms)
        else f"chosen finalist: {chosen.measured_ms:.4f} ms measured, the fastest of {len(measured)}"
    )
    return chosen, measured


def _finish(
    run: SearchRun, chosen: Measured, measured: list[Measured], *, data: str, reporter: Reporter
) -> SearchResult:
    """Fine-tune the chosen network, score it (the test split once), save it and write the report."""
    config, ds, lp, net = run.config, run.ds, run.lp, run.b.net
    pruned = run.prune_candidate(chosen.candidate)
    run.fine_tune(
        pruned.module, config.final_epochs, config.seed, teacher=net if config.distill else None,
        on_step=reporter.task("fine-tune winner"),
    )  # fmt: skip
    kill_point("fine-tuned")  # tests/test_crash.py
    budget_ms = run.budget_ms if math.isfinite(run.budget_ms) else None
    dense = _summary("dense", net, ds, run.dense_ms[-1], run.b.example)
    final = _summary("pruned", pruned.module, ds, chosen.measured_ms, run.b.example)
    pruned.meta = {
        "budget_ms": budget_ms, "max_accuracy_drop": config.max_accuracy_drop,
        "dense_val_accuracy": dense.accuracy, "measured_ms": chosen.measured_ms, "margin": chosen.margin,
        "dense_ms": dense.latency_ms, "reference_ms": run.reference_ms, "profile_scale": run.scale,
        "val_accuracy": final.accuracy, "test_accuracy": final.test_accuracy, "strategy": run.strategy.name,
        "augment": run.augment, "backend": lp.meta["backend"], "precision": lp.meta.get("precision", "fp32"),
        "backend_settings": lp.meta["backend_settings"], "device": lp.meta["device"],
    }  # fmt: skip
    save_pruned(run.run_dir / "pruned.pt", pruned)
    record = SearchRecord(
        model=run.model, data=data, strategy=run.strategy.name, trains_trials=run.strategy.evaluates,
        budget_ms=budget_ms, dense=dense, pruned=final, max_accuracy_drop=config.max_accuracy_drop,
        dense_widths=run.dense_widths, widths=pruned.widths, chosen=chosen, measured=measured,
        study=run.study, space=run.b.space, margin_floor=run.tolerance,
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
