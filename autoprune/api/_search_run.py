"""One search's working state: the bound model, data, predictor, study and budget, and every way the
search judges a network (prune, proxy, short fine-tune, device timing). ``search`` runs its steps on it."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import optuna
from torch import Tensor, nn

from autoprune import training
from autoprune._console import Reporter
from autoprune._killpoint import kill_point
from autoprune.api._bound import Bound, bind
from autoprune.api._targets import open_targets, target_info, target_name
from autoprune.config import SearchConfig
from autoprune.data import DatasetSplits, load_dataset
from autoprune.errors import ConfigError
from autoprune.graph import Widths, dense_widths
from autoprune.latency import Timing
from autoprune.predictor import LatencyPredictor
from autoprune.prune import AdaptiveBNProxy, PrunedModel, calibration_batches, prune_model, recalibrate_bn
from autoprune.rundir import claim_run_dir, hold_run_dir, undone_on_refusal
from autoprune.search import (
    Candidate,
    DenseNetwork,
    Report,
    SearchProblem,
    SearchStrategy,
    channel_scores,
    check_budget,
    check_storage,
    fail_dead_claims,
    get_criterion,
    load_start,
    measured_once,
    open_study,
    profile_frame,
    resolve_budget,
    search_reference,
    strategy_class,
    study_lock,
)
from autoprune.search.targets import Target, Targets


@dataclass
class SearchRun:
    model: str
    predictor: str  # the first target's predictor file
    config: SearchConfig
    strategy: SearchStrategy
    ds: DatasetSplits
    lp: LatencyPredictor
    bound_factor: float  # 1, or the predictor's calibrated upper bound's factor (--budget-confidence)
    b: Bound
    run_dir: Path
    storage_url: str
    study: optuna.Study
    reference_ms: float  # the dense network timed when the study began
    frame_ms: float  # the dense latency the budget refers to: measured ratios x this are judged latencies
    scale: float  # profile latencies -> the budget's frame
    budget_ms: float  # math.inf: no budget
    augment: bool
    batches: list[tuple[Tensor, Tensor]]
    scores: Mapping[str, Tensor]
    dense_val: float | None
    extras: list[Target] = field(default_factory=list)  # the targets after the first (--target)
    dense_ms: list[float] = field(default_factory=list)  # every dense timing beside the candidates
    loads: list[float] = field(default_factory=list)  # the host's 1-minute load average at each timing
    _proxy: AdaptiveBNProxy | None = None

    @property
    def trials(self) -> int:
        return self.config.trials or self.strategy.default_trials

    @property
    def dense_widths(self) -> Widths:
        return dense_widths(self.b.groups)

    def predict_ms(self, widths: Widths) -> float:
        return self.scale * self.bound_factor * self.lp.predict(widths)

    def predict_many(self, widths: list[Widths]) -> list[float]:
        return [self.scale * self.bound_factor * float(v) for v in self.lp.predict(widths)]

    def fraction_latency(self, fractions: Tensor) -> Tensor:
        """The predicted latency of kept fractions (per group), differentiable (an LPNet)."""
        return self.scale * self.bound_factor * self.lp.predict_fractions(fractions)

    @cached_property
    def targets(self) -> Targets:
        """The first target (the predictor and budget the search runs on) and the others (--target)."""
        first = Target(
            self.name, self.budget_ms, self.predict_many, measure=self.judged(self.timed),
            latency=self.fraction_latency if self.lp.differentiable else None, tolerance=self.tolerance,
            info=target_info(self.predictor, self.lp),
        )  # fmt: skip
        return Targets([first, *self.extras])

    def finalist_timer(self) -> Callable[[list[Widths]], list[Timing]]:
        """Finalists timed on every target here, each target's timings kept in the run directory (a
        rerun measures none twice: ``measured_once``)."""

        def kept(target: Target) -> Callable[[list[Widths]], list[Timing]]:
            if target is self.targets.primary:
                return self.judged(measured_once(self.timed, self.run_dir / "finalists.json"))
            assert target.measure is not None
            return measured_once(target.measure, self.run_dir / f"finalists-{target.name}.json")

        return self.targets.timer(kept)

    @property
    def name(self) -> str:
        """The first target's name: its predictor file's stem."""
        return target_name(self.predictor, [])

    def prune(
        self, widths: Widths, dense: nn.Module | None = None, by: Mapping[str, Tensor] | None = None,
        criterion: str | None = None, *, recalibrate: bool = True,
    ) -> PrunedModel:  # fmt: skip
        """``dense`` (default the searched network) pruned to ``widths`` by ``by`` (default the criterion's
        scores), BatchNorm recalibrated on the fixed calibration batches unless not ``recalibrate``."""
        p = prune_model(
            self.b.net if dense is None else dense, widths=widths, model_spec=self.model,
            num_classes=self.b.classes, input_shape=self.b.input_shape,
            criterion=criterion or self.config.criterion, scores=self.scores if by is None else by,
        )  # fmt: skip
        if recalibrate:
            recalibrate_bn(p.module, self.batches)
        return p

    def prune_candidate(self, c: Candidate) -> PrunedModel:
        """From the searched network, or from the weights its strategy retrained (and their scores)."""
        if c.start is None:
            return self.prune(c.widths)
        dense, by = load_start(c.start, self.b.net)
        return self.prune(c.widths, dense, by, self.strategy.name)

    def fine_tune(self, module: nn.Module, epochs: float, seed: int, **kwargs: object) -> None:
        training.train(
            module, self.ds.train, epochs=epochs, lr=self.config.lr, seed=seed, augment=self.augment,
            **kwargs,  # type: ignore[arg-type]
        )  # fmt: skip

    def evaluate(self, widths: Widths, report: Report | None) -> float:
        """Prune, recalibrate BatchNorm, (report,) fine-tune briefly, score on validation."""
        module = self.prune(widths).module
        kill_point("trial")  # tests/test_crash.py
        if report is not None:
            report(0, training.evaluate(module, self.ds.val))
        self.fine_tune(module, self.config.finetune_epochs, self.config.seed)
        return training.evaluate(module, self.ds.val)

    def finetune_score(self, widths: Widths, epochs: float, seed: int) -> float:
        """The rerank's fine-tune: the same for every network given (epochs, data order ``seed``)."""
        module = self.prune(widths).module
        self.fine_tune(module, epochs, seed)
        return training.evaluate(module, self.ds.val)

    def proxy(self, widths: Widths) -> float:
        """Adaptive BatchNorm on the proxy's own fixed batches, accuracy on its validation subset."""
        if self._proxy is None:
            c = self.config
            self._proxy = AdaptiveBNProxy(
                self.ds.train, self.ds.val, batches=c.proxy_batches, val_size=c.proxy_val, seed=c.seed
            )
        return self._proxy.score(self.prune(widths, recalibrate=False).module).value

    def timed(self, widths_list: list[Widths]) -> list[Timing]:
        """Each network timed round for round beside the dense network, repeated (up to
        ``--measure-seconds``) while its ratio to it is spread wider than the margin's floor."""
        timings = self.b.time_beside_dense(
            widths_list, tolerance=self.tolerance, max_seconds=self.config.measure_seconds
        )
        kill_point("measure")  # tests/test_crash.py
        return timings

    def judged(self, timer: Callable[[list[Widths]], list[Timing]]) -> Callable[[list[Widths]], list[Timing]]:
        """``timer``'s timings (taken beside the dense network) as latencies in the budget's frame: each
        network's ratio to the dense network beside it, times ``frame_ms``; its spread is the ratio's. A
        host slowed down by another process slows both alike, so the judgement holds on a busy machine.
        The dense timings and the host's load are kept for the report."""

        def measure(widths_list: list[Widths]) -> list[Timing]:
            timings = timer(widths_list)
            self.dense_ms.extend(float(t.reference_ms) for t in timings if t.reference_ms is not None)
            if hasattr(os, "getloadavg"):
                self.loads.append(os.getloadavg()[0])
            return [t.judged(self.frame_ms) for t in timings]

        return measure

    @property
    def host_slowdown(self) -> float | None:
        """The dense network as timed beside the finalists over the budget's frame (1: as quiet as then)."""
        return float(np.median(self.dense_ms)) / self.frame_ms if self.dense_ms else None

    def problem(self) -> SearchProblem:
        c, lp = self.config, self.lp

        def accuracy(module: nn.Module, widths: Widths, by: Mapping[str, Tensor]) -> float:
            return training.evaluate(self.prune(widths, module, by, self.strategy.name).module, self.ds.val)

        network = DenseNetwork(
            module=self.b.net, example=self.b.example, train=self.ds.train, epochs=c.finetune_epochs, lr=c.lr,
            seed=c.seed,
            latency=self.fraction_latency if lp.differentiable else None, predictor=lp.kind,
            accuracy=accuracy,
            work_dir=self.run_dir, augment=self.augment,
        )  # fmt: skip
        return self.targets.apply(SearchProblem(
            space=self.b.space, budget_ms=self.budget_ms, predict_ms=self.predict_ms, evaluate=self.evaluate,
            measure=self.judged(self.timed), macs=lambda w: float(lp.features.macs([w])[0]),
            predict_many=self.predict_many, scores=self.scores, tolerance=self.tolerance, network=network,
            max_accuracy_drop=c.max_accuracy_drop, dense_accuracy=self.dense_val, proxy=self.proxy,
            finetune=self.finetune_score, val_size=len(self.ds.val),  # type: ignore[arg-type]
        ))  # fmt: skip

    @property
    def tolerance(self) -> float:
        return self.b.tolerance(self.config.margin)


def open_search(
    model: str, *, checkpoint: str | Path, data: str, predictor: str | Path, out: str | Path,
    config: SearchConfig, storage: str | None, study: str, image_size: int, reporter: Reporter,
) -> SearchRun:  # fmt: skip
    """Check everything a user can get wrong before any work, claim the run directory, open (or resume)
    the study, time the dense network and fix the budget."""
    run_dir = Path(out)
    strategy = strategy_class(config.strategy_name).from_config(config)  # unknown names fail before any work
    get_criterion(config.criterion)
    ds = load_dataset(data, image_size=image_size)
    lp = LatencyPredictor.load(predictor)
    factor = lp.upper_factor(config.budget_confidence)
    if strategy.needs_gradients and not lp.differentiable:
        raise ConfigError(
            f"--strategy {strategy.name} trains against a differentiable latency predictor and "
            f"'{predictor}' is a {lp.kind}: fit one with `autoprune fit PROFILE --predictor lpnet`"
        )
    b = bind(model, checkpoint=checkpoint, lp=lp, num_classes=ds.num_classes, data={data: ds})
    if storage is not None:
        check_storage(storage)
    with undone_on_refusal(run_dir, "search"):  # a new run refused here leaves no directory behind
        hold_run_dir(run_dir, "search")
        claim_run_dir(
            run_dir,
            "search",
            {"model": model, "checkpoint": str(checkpoint), "data": data, "predictor": str(predictor),
             "search": config.to_dict()},
        )  # fmt: skip
        storage_url, opt_study = _open_study(strategy, config, run_dir, storage, study, reporter)
        return _budgeted(
            model, str(predictor), config=config, strategy=strategy, ds=ds, lp=lp, factor=factor, b=b,
            run_dir=run_dir, storage_url=storage_url, study=opt_study, reporter=reporter,
        )  # fmt: skip


def _open_study(
    strategy: SearchStrategy, config: SearchConfig, run_dir: Path, storage: str | None, study: str,
    reporter: Reporter,
) -> tuple[str, optuna.Study]:  # fmt: skip
    """The search's Optuna study (the run directory's own sqlite file unless ``storage``), created or
    resumed; trials a killed search left running in its own study are failed, to train again."""
    settings = strategy.study_settings(seed=config.seed, trials=config.trials or strategy.default_trials)
    storage_url = storage or f"sqlite:///{run_dir / 'study.db'}"
    opt_study = open_study(
        storage=storage_url, study_name=study, sampler=settings.sampler, directions=settings.directions,
        pruner=settings.pruner,
    )  # fmt: skip
    if storage is None:  # the run directory's own study, which hold_run_dir keeps from other processes
        orphans = fail_dead_claims(opt_study, owned=True)
        if orphans:
            reporter.log(
                f"trials {orphans} were left running by a killed search: marked failed, to train again"
            )
    return storage_url, opt_study


def _budgeted(
    model: str, predictor: str, *, config: SearchConfig, strategy: SearchStrategy, ds: DatasetSplits,
    lp: LatencyPredictor, factor: float, b: Bound, run_dir: Path, storage_url: str, study: optuna.Study,
    reporter: Reporter,
) -> SearchRun:  # fmt: skip
    """The dense network timed, the budget fixed (and every other target's), the run assembled."""
    # The profile's latencies are drift-corrected to its own reference timing; the dense network timed
    # now converts them to the device's conditions now, in which the budget and the finalists are.
    with study_lock(study):  # the first of several workers records it; the others read it
        reference_ms = search_reference(study, lambda: b.time([dense_widths(b.groups)])[0].median_ms)
        first = target_name(predictor, [])
        extras = open_targets(config, b=b, model=model, study=study, first=first, reporter=reporter)
    frame_ms, scale = profile_frame(
        budget_in_ms=config.budget_ms is not None,
        reference_ms=reference_ms,
        profile_reference_ms=lp.meta.get("reference_ms"),
    )
    budget_ms = resolve_budget(
        study,
        budget_ms=config.budget_ms,
        budget_ratio=config.budget_ratio,
        measure_dense=lambda: reference_ms,
    )
    check_budget(budget_ms, fastest_ms=scale * lp.narrowest_ms(b.space.narrowest()))  # math.inf: no budget
    reporter.log(
        f"dense network measured at {reference_ms:.4f} ms now; the budget's frame is {frame_ms:.4f} ms "
        f"(profile latencies scaled by {scale:.3f})"
    )
    batches = calibration_batches(ds.train, count=config.calibration_batches, seed=config.seed)
    return SearchRun(
        model=model, predictor=predictor, config=config, strategy=strategy, extras=extras, ds=ds, lp=lp,
        bound_factor=factor, b=b,
        run_dir=run_dir, storage_url=storage_url, study=study, reference_ms=reference_ms,
        frame_ms=frame_ms, scale=scale, budget_ms=budget_ms,
        augment=training.resolve_augment(config.augment, ds), batches=batches,
        scores=channel_scores(b.net, b.example, config.criterion, batches=batches),
        dense_val=None if config.max_accuracy_drop is None else training.evaluate(b.net, ds.val),
    )  # fmt: skip
