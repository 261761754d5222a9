"""``autoprune adapt``: STAMP. A mask generator is meta-learned over class subsets of the reference data
(``<out>/generator.pt``, reused by a rerun with the same settings), then adapted to the target data in
one pass plus a few gradient steps under the latency budget; its network is pruned, BatchNorm
recalibrated on the target, measured on the device, (optionally fine-tuned,) scored and saved."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from autoprune import training
from autoprune._console import Reporter
from autoprune._io import atomic_write, write_json
from autoprune.adapt.stamp import (
    AdaptedMask,
    MaskGenerator,
    StampSettings,
    adapt_mask,
    fit_classifier,
    meta_train,
    new_generator,
    replace_classifier,
)
from autoprune.api._bound import Bound, bind
from autoprune.config import MEASURE_SECONDS, AdaptConfig
from autoprune.data import DatasetSplits, load_dataset
from autoprune.errors import ConfigError
from autoprune.graph import Widths, dense_widths
from autoprune.latency import Timing
from autoprune.predictor import LatencyPredictor
from autoprune.prune import calibration_batches, prune_model, recalibrate_bn, save_pruned
from autoprune.rundir import claim_run_dir
from autoprune.search import (
    Candidate,
    Measured,
    channel_scores,
    check_budget,
    profile_frame,
    select_by_measurement,
)
from autoprune.search.allocation import scaled_down
from autoprune.search.finalists import widest_measured

_SILENT = Reporter()
FALLBACKS = 6
"""Networks tried after the adapted one if it measures over the budget: it scaled down alike in every
group to be predicted 3 %, 6 %, ... under the budget (the generator's allocation kept)."""
LAST_RESORT = 15
"""When none of those measures within the budget: the adapted network scaled down alike in every group in
this many steps from its own prediction to the narrowest network, bisected by measurement."""


@dataclass(frozen=True)
class AdaptResult:
    run_dir: Path
    budget_ms: float
    widths: dict[str, int]
    predicted_ms: float
    measured_ms: float
    dense_ms: float
    val_accuracy: float
    test_accuracy: float
    meta_seconds: float  # meta-training (0 when the saved generator was reused)
    adapt_seconds: float  # from the target's data to the mask: classifier, set encoding, adaptation steps
    replaced_classifier: bool


@dataclass(frozen=True)
class _Budget:
    """The budget in ms, the dense latency it refers to, the frame finalists are judged in, and the
    latency predictor with its scale to now (as ``search``'s)."""

    budget_ms: float
    reference_ms: float
    frame_ms: float
    scale: float
    lp: LatencyPredictor

    def predict_ms(self, widths: Widths) -> float:
        return self.scale * self.lp.predict(widths)

    def latency(self, fractions: torch.Tensor) -> torch.Tensor:
        """The differentiable latency of kept fractions, in ms now."""
        return self.scale * self.lp.predict_fractions(fractions)


def adapt(
    model: str,
    *,
    checkpoint: str | Path,
    reference: str,
    data: str,
    predictor: str | Path,
    out: str | Path,
    config: AdaptConfig,
    image_size: int = 32,
    reporter: Reporter = _SILENT,
) -> AdaptResult:
    """Prune ``model`` (trained on ``reference``) for ``data`` with STAMP under the budget; save
    ``out/pruned.pt`` and ``out/adapt.json``. A target with another number of classes than the
    checkpoint gets a new classifier, fit on the dense network's features (a linear probe)."""
    run_dir = Path(out)
    ref, target = (load_dataset(spec, image_size=image_size) for spec in (reference, data))
    lp = LatencyPredictor.load(predictor)
    _check_inputs(lp, predictor, config, ref.num_classes, reference)
    b = bind(
        model, checkpoint=checkpoint, lp=lp, num_classes=ref.num_classes, data={reference: ref, data: target}
    )
    settings = {"model": model, "checkpoint": str(checkpoint), "reference": reference, "data": data,
                "predictor": str(predictor), "image_size": image_size, "adapt": config.to_dict()}  # fmt: skip
    claim_run_dir(run_dir, "adapt", settings)
    budget = _budget(b, lp, config, run_dir)
    stamp = StampSettings(
        **{f.name: getattr(config, f.name) for f in fields(StampSettings) if hasattr(config, f.name)}
    )
    generator, meta_seconds, reused = _generator(b, ref.train, stamp, budget, settings, run_dir, reporter)

    tuned, mask, replaced, adapt_seconds = _adapt_to_target(
        b, target, generator, budget, stamp, config, reporter
    )
    chosen = _measured(b, mask.widths, budget, config)
    pruned = prune_model(
        tuned, widths=chosen.candidate.widths, model_spec=model, num_classes=target.num_classes,
        input_shape=b.input_shape, criterion="stamp", scores=mask.scores,
    )  # fmt: skip
    val, test = _tune_and_score(pruned.module, target, config, reporter)
    pruned.meta = {
        "budget_ms": budget.budget_ms, "reference_ms": budget.reference_ms, "frame_ms": budget.frame_ms,
        "profile_scale": budget.scale, "predicted_ms": chosen.candidate.predicted_ms,
        "measured_ms": chosen.measured_ms, "margin": chosen.margin, "last_resort": chosen.last_resort,
        "generator_predicted_ms": mask.latency_ms,
        "widths": pruned.widths, "generator_counts": mask.counts, "val_accuracy": val, "test_accuracy": test,
        "meta_seconds": meta_seconds, "reused_generator": reused, "adapt_seconds": adapt_seconds,
        "replaced_classifier": replaced, "finetune_epochs": config.finetune_epochs, "strategy": "stamp",
        "backend": lp.meta["backend"], "device": lp.meta["device"],
    }  # fmt: skip
    save_pruned(run_dir / "pruned.pt", pruned)
    write_json(run_dir / "adapt.json", pruned.meta)
    return AdaptResult(
        run_dir, budget.budget_ms, pruned.widths, chosen.candidate.predicted_ms, chosen.measured_ms,
        budget.reference_ms, val, test, meta_seconds, adapt_seconds, replaced,
    )  # fmt: skip


def _adapt_to_target(
    b: Bound, target: DatasetSplits, generator: MaskGenerator, budget: _Budget, stamp: StampSettings,
    config: AdaptConfig, reporter: Reporter,
) -> tuple[torch.nn.Module, AdaptedMask, bool, float]:  # fmt: skip
    """The dense network for the target (a new classifier where its classes differ) and the generator's
    mask adapted to the target's data: (network, mask, classifier replaced, seconds taken)."""
    began = time.perf_counter()
    tuned = copy.deepcopy(b.net)
    replaced = target.num_classes != b.classes
    if replaced:
        replace_classifier(tuned, target.num_classes, seed=config.seed)
        fit_classifier(tuned, target.train, seed=config.seed)
    mask = adapt_mask(
        generator,
        tuned,
        b.example,
        b.space,
        target.train,
        latency=budget.latency,
        budget_ms=budget.budget_ms,
        settings=stamp,
        on_step=reporter.task("adapt to target"),
    )
    return tuned, mask, replaced, time.perf_counter() - began


def _tune_and_score(
    module: torch.nn.Module, target: DatasetSplits, config: AdaptConfig, reporter: Reporter
) -> tuple[float, float]:
    """BatchNorm recalibrated on the target, the optional fine-tune, and (validation, test) accuracy."""
    batches = calibration_batches(target.train, count=config.calibration_batches, seed=config.seed)
    recalibrate_bn(module, batches)
    if config.finetune_epochs > 0:
        training.train(module, target.train, epochs=config.finetune_epochs, lr=config.finetune_lr,
                       seed=config.seed, on_step=reporter.task("fine-tune"))  # fmt: skip
    return training.evaluate(module, target.val), training.evaluate(module, target.test)


def _check_inputs(
    lp: LatencyPredictor, predictor: str | Path, config: AdaptConfig, classes: int, reference: str
) -> None:
    if not lp.differentiable:
        raise ConfigError(
            f"autoprune adapt trains against a differentiable latency predictor and '{predictor}' is a "
            f"{lp.kind}: fit one with `autoprune fit PROFILE --predictor lpnet`"
        )
    if config.subset_classes is not None and config.subset_classes > classes:
        raise ConfigError(
            f"--subset-classes {config.subset_classes} exceeds the {classes} classes of {reference}: "
            f"pass at most {classes}"
        )


def _budget(b: Bound, lp: LatencyPredictor, config: AdaptConfig, run_dir: Path) -> _Budget:
    """The dense latency when the run began is what a ratio is of, and what converts the profile's
    drift-corrected latencies to now (as search's reference); kept, so a rerun keeps its budget."""
    ref_path = run_dir / "reference.json"
    if not ref_path.is_file():
        write_json(ref_path, {"reference_ms": b.time([dense_widths(b.groups)])[0].median_ms})
    reference_ms = float(json.loads(ref_path.read_text())["reference_ms"])
    frame_ms, scale = profile_frame(
        budget_in_ms=config.budget_ms is not None, reference_ms=reference_ms,
        profile_reference_ms=lp.meta.get("reference_ms"),
    )  # fmt: skip
    budget_ms = float(config.budget_ms or (config.budget_ratio or 1.0) * reference_ms)
    check_budget(budget_ms, fastest_ms=scale * lp.narrowest_ms(b.space.narrowest()))
    return _Budget(budget_ms, reference_ms, frame_ms, scale, lp)


def _generator(
    b: Bound, reference: Dataset, stamp: StampSettings, budget: _Budget, settings: dict[str, Any],
    run_dir: Path, reporter: Reporter,
) -> tuple[MaskGenerator, float, bool]:  # fmt: skip
    """The mask generator meta-trained on the reference data, or the one a run with the same settings
    saved; with the seconds it took and whether it was reused."""
    predict_ms = budget.predict_ms
    start = b.space.widest_uniform_within(budget.budget_ms, predict_ms)
    importance = channel_scores(b.net, b.example, "l1")
    generator = new_generator(b.net, b.example, b.space, reference, importance=importance, start=start,
                              settings=stamp)  # fmt: skip
    gen_path = run_dir / "generator.pt"
    key = {**settings, "adapt": {k: v for k, v in asdict(stamp).items() if k != "adapt_steps"},
           "budget_ms": budget.budget_ms}  # fmt: skip
    key.pop("data")
    saved: dict[str, Any] = torch.load(gen_path, weights_only=True) if gen_path.is_file() else {}
    if saved.get("key") == json.dumps(key, sort_keys=True):
        generator.load_state_dict(saved["state_dict"])
        reporter.log(f"reusing the meta-trained generator {gen_path}")
        return generator, 0.0, True
    began = time.perf_counter()
    meta_train(
        generator,
        b.net,
        b.example,
        b.space,
        reference,
        latency=budget.latency,
        budget_ms=budget.budget_ms,
        settings=stamp,
        on_step=reporter.task("meta-train generator"),
    )
    seconds = time.perf_counter() - began
    payload = {
        "key": json.dumps(key, sort_keys=True),
        "state_dict": generator.state_dict(),
        "seconds": seconds,
    }
    atomic_write(gen_path, lambda p: torch.save(payload, p))
    return generator, seconds, False


def _measured(b: Bound, widths: Widths, budget: _Budget, config: AdaptConfig) -> Measured:
    """The adapted network, or the first of its scaled-down fallbacks, that measures within the budget,
    judged on its ratio to the dense network timed beside it (as ``search``'s finalists); when none does,
    the widest scaling of it that measures within the budget (a bisection down to the narrowest)."""
    predict_ms = budget.predict_ms
    lower = scaled_down(b.space, widths, predict_ms, budget_ms=budget.budget_ms, fallbacks=FALLBACKS)
    candidates = [Candidate(widths, predict_ms(widths)), *(Candidate(w, ms) for w, ms in lower)]
    tolerance = b.tolerance(config.margin)

    def judged(widths_list: list[Widths]) -> list[Timing]:
        timings = b.time_beside_dense(widths_list, tolerance=tolerance, max_seconds=MEASURE_SECONDS)
        return [t.judged(budget.frame_ms) for t in timings]

    return select_by_measurement(
        candidates, measure=judged, budget_ms=budget.budget_ms, finalists=3, tolerance=tolerance,
        last_resort=lambda: _last_resort(b, widths, budget, judged, tolerance=tolerance),
    ).chosen  # fmt: skip


def _last_resort(
    b: Bound,
    widths: Widths,
    budget: _Budget,
    judged: Callable[[list[Widths]], list[Timing]],
    *,
    tolerance: float,
) -> Measured:
    """When the adapted network and its fallbacks all measure over the budget (the predictor erred): the
    widest of its scalings, from its own prediction down to the narrowest network, that measures within
    the budget."""
    own = budget.predict_ms(widths)
    lower = scaled_down(b.space, widths, budget.predict_ms, budget_ms=own, fallbacks=LAST_RESORT,
                        step=1 / (LAST_RESORT + 1))  # fmt: skip
    ladder = [widths, *(w for w, _ in lower)]
    if ladder[-1] != b.space.narrowest():
        ladder.append(b.space.narrowest())
    return widest_measured(ladder, lambda i: judged([ladder[i]])[0], budget.predict_ms,
                           budget_ms=budget.budget_ms, tolerance=tolerance)  # fmt: skip
