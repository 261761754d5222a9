"""``autoprune fit``: compare latency predictors on a profile and save the most accurate one (or the one
asked for), saying which and why."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoprune._console import Reporter
from autoprune._io import write_json
from autoprune.config import FitConfig
from autoprune.errors import ConfigError
from autoprune.latency import read_profile
from autoprune.predictor import (
    Choice,
    Comparison,
    Features,
    LatencyPredictor,
    choose,
    compare,
    features_for_profile,
    make_predictor,
    predictor_kinds,
)
from autoprune.report import calibration_plot

_SILENT = Reporter()


@dataclass(frozen=True)
class FitResult:
    predictor: LatencyPredictor
    choice: Choice  # which kind was saved, and why
    comparison: Comparison
    path: Path
    metrics_path: Path
    plot_path: Path
    rows: dict[str, int]

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        """Held-out metrics per predictor kind."""
        return {kind: r["held_out"] for kind, r in self.comparison.results.items()}


def fit(
    profile_path: str | Path,
    *,
    out: str | Path,
    config: FitConfig = FitConfig(),
    model: str | None = None,
    reporter: Reporter = _SILENT,
) -> FitResult:
    """Compare the predictors on the profile (held-out split and k-fold), then fit the chosen one on all
    usable rows and save it, bound to model and device, with ``<out>.json`` (metrics, the choice and
    its reason) and ``<out>.calibration.png`` beside it. ``config.predictor`` "auto" chooses the most
    accurate (``predictor.choose``); a kind's name saves that kind."""
    prof = read_profile(profile_path)
    features = features_for_profile(prof, model=model)
    usable, note = prof.for_fitting(include_noisy=config.include_noisy)  # said once the inputs are checked
    auto = config.predictor == "auto"
    kinds, options = _kinds(config, features)
    step = reporter.task(f"fit: comparing {len(kinds)} predictors")
    done = iter(range(1, len(kinds) + 1))
    comparison = compare(
        usable,
        features,
        kinds,
        holdout=config.holdout,
        folds=config.folds,
        seed=config.seed,
        options=options,
        on_step=lambda kind: step(next(done) - 1, len(kinds)),
    )
    step(len(kinds), len(kinds))
    if note is not None:
        reporter.log(note)
    choice = choose(comparison)
    if not auto:
        choice = Choice(
            config.predictor, f"asked for (auto would save {choice.kind}: {choice.reason})", choice.by
        )
    chosen = make_predictor(choice.kind, features, **options.get(choice.kind, {})).fit(usable)
    chosen.meta["fit"] = config.to_dict()
    chosen.meta["metrics"] = comparison.results[choice.kind]
    chosen.meta["chosen_because"] = choice.reason
    out = Path(out)
    chosen.save(out)
    used = len(usable.rows)
    rows = {"total": len(prof.rows), "used": used, "noisy_left_out": len(prof.rows) - used}
    metrics = {
        "profile": str(prof.path), "chosen": choice.kind, "reason": choice.reason, "chosen_by": choice.by,
        "fit": config.to_dict(), "rows": rows, **comparison.to_dict(),
    }  # fmt: skip
    metrics_path = write_json(out.with_suffix(".json"), metrics)
    plot = calibration_plot(
        out.with_suffix(".calibration.png"),
        comparison.measured,
        {comparison.results[k]["label"]: p for k, p in comparison.predicted.items()},
        title=f"{prof.meta['model']} on {prof.meta['backend']}: {len(comparison.measured)} held-out networks",
    )
    return FitResult(chosen, choice, comparison, out, metrics_path, plot, rows)


def _kinds(config: FitConfig, features: Features) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The kinds to compare (the asked-for one included) and each one's options; an unknown name or a
    missing lookup table fails now, before any work."""
    kinds = list(config.compare or [k for k in predictor_kinds() if features.lut or k not in _LUT_KINDS])
    if config.predictor != "auto" and config.predictor not in predictor_kinds():
        raise ConfigError(
            f"unknown predictor '{config.predictor}': use auto or one of {', '.join(predictor_kinds())}"
        )
    if config.predictor != "auto" and config.predictor not in kinds:
        kinds.insert(0, config.predictor)
    options = {"lpnet": config.lpnet_options(), **{k: {"seed": config.seed} for k in _SEEDED_KINDS}}
    for kind in kinds:
        make_predictor(kind, features, **options.get(kind, {}))
    return kinds, options


_LUT_KINDS = ("lut", "lut_linear")
_SEEDED_KINDS = ("gb", "rf", "ridge")
