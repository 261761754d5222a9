"""``autoprune search``: the strategy proposes networks under the budget, the finalists are measured on
the device, and the chosen one is fine-tuned, scored once on the test split and saved."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from autoprune import training
from autoprune._console import Reporter
from autoprune._killpoint import kill_point
from autoprune.api._bound import bind
from autoprune.api._search_report import SearchRecord, write_search_outputs
from autoprune.config import SearchConfig
from autoprune.data import DatasetSplits, load_dataset
from autoprune.errors import ConfigError
from autoprune.graph import Widths, count_macs_params, dense_widths
from autoprune.latency import Timing
from autoprune.predictor import LatencyPredictor
from autoprune.prune import PrunedModel, calibration_batches, prune_model, recalibrate_bn, save_pruned
from autoprune.report import ModelSummary, TrialPoint
from autoprune.rundir import claim_run_dir, hold_run_dir, release_run_dir
from autoprune.search import (
    Candidate,
    DenseNetwork,
    Report,
    SearchProblem,
    channel_scores,
    check_budget,
    check_storage,
    fail_orphaned_trials,
    get_criterion,
    load_start,
    measured_once,
    open_study,
    reference_scale,
    release_storage,
    resolve_budget,
    run_strategy,
    search_reference,
    select_by_measurement,
    strategy_class,
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


def _predictor(path: str | Path, confidence: float | None) -> tuple[LatencyPredictor, float]:
    """The saved predictor and the factor on its prediction that the budget constrains, in the profile's
    conditions: 1, or with a confidence its calibrated upper bound's (``predict_upper``: any kind; too
    few calibration rows for the confidence fail here)."""
    lp = LatencyPredictor.load(path)
    return lp, 1.0 if confidence is None else math.exp(lp.log_margin(confidence))


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
    run_dir = Path(out)
    strategy = strategy_class(config.strategy_name).from_config(config)  # unknown names fail before any work
    get_criterion(config.criterion)
    ds = load_dataset(data, image_size=image_size)
    lp, bound = _predictor(predictor, config.budget_confidence)
    if strategy.needs_gradients and not lp.differentiable:
        raise ConfigError(
            f"--strategy {strategy.name} trains against a differentiable latency predictor and "
            f"'{predictor}' is a {lp.kind}: fit one with `autoprune fit PROFILE --predictor lpnet`"
        )
    b = bind(model, checkpoint=checkpoint, lp=lp, num_classes=ds.num_classes, data={data: ds})
    net, classes, input_shape, example, groups = b.net, b.classes, b.input_shape, b.example, b.groups
    space = b.space
    if storage is not None:
        check_storage(storage)
    hold_run_dir(run_dir, "search")
    claim_run_dir(
        run_dir,
        "search",
        {"model": model, "checkpoint": str(checkpoint), "data": data, "predictor": str(predictor),
         "search": config.to_dict()},
    )  # fmt: skip
    dense_w = dense_widths(groups)
    dense_ms: list[float] = []  # every dense timing, interleaved with the candidates of its batch

    def timed(widths_list: list[Widths]) -> list[Timing]:
        timings = b.time(widths_list)
        kill_point("measure")  # tests/test_crash.py
        return timings

    def measurer(timer: Callable[[list[Widths]], list[Timing]]) -> Callable[[list[Widths]], list[Timing]]:
        def measure(widths_list: list[Widths]) -> list[Timing]:
            """Candidates timed interleaved with the dense network; the dense time is kept for the report."""
            timings = timer([dense_w, *widths_list])
            dense_ms.append(timings[0].median_ms)
            return timings[1:]

        return measure

    measure = measurer(timed)

    settings = strategy.study_settings(seed=config.seed, trials=config.trials or strategy.default_trials)
    storage_url = storage or f"sqlite:///{run_dir / 'study.db'}"
    opt_study = open_study(
        storage=storage_url,
        study_name=study,
        sampler=settings.sampler,
        directions=settings.directions,
        pruner=settings.pruner,
    )
    if storage is None:  # the run directory's own study, which hold_run_dir keeps from other processes
        orphans = fail_orphaned_trials(opt_study)
        if orphans:
            reporter.log(f"trials {orphans} were left running by a killed search: marked failed, replaced")
    # The profile's latencies are drift-corrected to its own reference timing; the dense network timed
    # now converts them to the device's conditions now, in which the budget and the finalists are.
    with study_lock(opt_study):  # the first of several workers records it; the others read it
        reference_ms = search_reference(opt_study, lambda: b.time([dense_w])[0].median_ms)
    scale = reference_scale(profile_reference_ms=lp.meta.get("reference_ms"), reference_ms=reference_ms)

    def predict_ms(widths: Widths) -> float:
        return scale * bound * lp.predict(widths)

    budget_ms = resolve_budget(
        opt_study,
        budget_ms=config.budget_ms,
        budget_ratio=config.budget_ratio,
        measure_dense=lambda: reference_ms,
    )
    narrowest_ms = lp.meta.get("narrowest_ms") or lp.predict(space.narrowest())
    check_budget(budget_ms, fastest_ms=scale * float(narrowest_ms))  # math.inf: no budget
    dense_val = None if config.max_accuracy_drop is None else training.evaluate(net, ds.val)
    reporter.log(
        f"dense network measured at {reference_ms:.4f} ms now: profile latencies scaled by {scale:.3f}"
    )
    batches = calibration_batches(ds.train, count=config.calibration_batches, seed=config.seed)
    scores = channel_scores(net, example, config.criterion, batches=batches)

    def prune(
        widths: Widths,
        dense: nn.Module = net,
        by: Mapping[str, Tensor] = scores,
        criterion: str = config.criterion,
    ) -> PrunedModel:
        p = prune_model(
            dense, widths=widths, model_spec=model, num_classes=classes, input_shape=input_shape,
            criterion=criterion, scores=by,
        )  # fmt: skip
        recalibrate_bn(p.module, batches)
        return p

    def prune_candidate(c: Candidate) -> PrunedModel:
        """From the searched network, or from the weights its strategy retrained (and their scores)."""
        if c.start is None:
            return prune(c.widths)
        dense, by = load_start(c.start, net)
        return prune(c.widths, dense, by, strategy.name)

    def evaluate(widths: Widths, report: Report | None) -> float:
        """Prune, recalibrate BatchNorm, (report,) fine-tune briefly, score on validation."""
        module = prune(widths).module
        kill_point("trial")  # tests/test_crash.py
        if report is not None:
            report(0, training.evaluate(module, ds.val))
        training.train(module, ds.train, epochs=config.finetune_epochs, lr=config.lr, seed=config.seed)
        return training.evaluate(module, ds.val)

    network = DenseNetwork(
        module=net, example=example, train=ds.train, epochs=config.finetune_epochs, lr=config.lr,
        seed=config.seed,
        latency=(lambda f: scale * bound * lp.predict_fractions(f)) if lp.differentiable else None,
        predictor=lp.kind,
        accuracy=lambda m, w, by: training.evaluate(prune(w, m, by, strategy.name).module, ds.val),
        work_dir=run_dir,
    )  # fmt: skip
    tolerance = b.protocol.max_deviation if config.margin is None else config.margin
    problem = SearchProblem(
        space=space,
        budget_ms=budget_ms,
        predict_ms=predict_ms,
        evaluate=evaluate,
        measure=measure,
        macs=lambda w: float(lp.features.macs([w])[0]),
        scores=scores,
        tolerance=tolerance,
        network=network,
        max_accuracy_drop=config.max_accuracy_drop,
        dense_accuracy=dense_val,
    )
    candidates = run_strategy(
        strategy, problem, study=opt_study, trials=config.trials or strategy.default_trials, on_trial=reporter.task("search trials")
    )
    # Finalists' timings are kept in the run directory: a rerun (after a crash in the fine-tune, say)
    # reuses them, so each finalist is measured once and the same one is chosen. Workers of one study
    # measure one at a time, not over each other.
    with study_lock(opt_study):
        chosen, measured = select_by_measurement(
            candidates,
            measure=measurer(measured_once(timed, run_dir / "finalists.json")),
            budget_ms=budget_ms,
            finalists=config.finalists,
            tolerance=tolerance,
        )
    has_budget = math.isfinite(budget_ms)
    reporter.log(
        f"chosen finalist: {chosen.measured_ms:.4f} ms measured, needed a margin of "
        f"{100 * chosen.margin:.1f} % (budget {budget_ms:.4f} ms)"
        if has_budget
        else f"chosen finalist: {chosen.measured_ms:.4f} ms measured, the fastest of {len(measured)}"
    )
    pruned = prune_candidate(chosen.candidate)
    training.train(
        pruned.module,
        ds.train,
        epochs=config.final_epochs,
        lr=config.lr,
        seed=config.seed,
        teacher=net if config.distill else None,
        on_step=reporter.task("fine-tune winner"),
    )
    kill_point("fine-tuned")  # tests/test_crash.py
    dense = _summary("dense", net, ds, dense_ms[-1], example)
    final = _summary("pruned", pruned.module, ds, chosen.measured_ms, example)
    pruned.meta = {
        "budget_ms": budget_ms if has_budget else None,
        "max_accuracy_drop": config.max_accuracy_drop,
        "dense_val_accuracy": dense.accuracy,
        "measured_ms": chosen.measured_ms,
        "margin": chosen.margin,
        "dense_ms": dense.latency_ms,
        "reference_ms": reference_ms,
        "profile_scale": scale,
        "val_accuracy": final.accuracy,
        "test_accuracy": final.test_accuracy,
        "strategy": strategy.name,
        "backend": lp.meta["backend"],
        "precision": lp.meta.get("precision", "fp32"),
        "backend_settings": lp.meta["backend_settings"],
        "device": lp.meta["device"],
    }
    save_pruned(run_dir / "pruned.pt", pruned)
    record = SearchRecord(
        model=model, data=data, strategy=strategy.name, trains_trials=strategy.evaluates,
        budget_ms=budget_ms if has_budget else None, dense=dense, pruned=final,
        max_accuracy_drop=config.max_accuracy_drop,
        dense_widths=dense_w, widths=pruned.widths, chosen=chosen, measured=measured,
        study=opt_study, space=space, margin_floor=tolerance,
    )  # fmt: skip
    finalists, front, sections = write_search_outputs(run_dir, record)
    release_storage(storage_url)
    release_run_dir(run_dir, "search")
    return SearchResult(
        run_dir, budget_ms if has_budget else None, dense, final, pruned.widths, finalists, front, sections,
        config.max_accuracy_drop,
    )  # fmt: skip


def _summary(
    name: str, net: nn.Module, ds: DatasetSplits, latency_ms: float, example: torch.Tensor
) -> ModelSummary:
    """Validation and test accuracy (the test split is scored here, once per final model)."""
    macs, params = count_macs_params(net, example)
    return ModelSummary(
        name, latency_ms, training.evaluate(net, ds.val), params, macs, training.evaluate(net, ds.test)
    )
