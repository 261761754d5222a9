"""``autoprune fit``: compare latency predictors on a profile and save the chosen one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from autoprune._console import Reporter
from autoprune._io import write_json
from autoprune.config import FitConfig
from autoprune.latency import read_profile
from autoprune.predictor import (
    Comparison,
    LatencyPredictor,
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
    """Compare the predictors on the profile (held-out split and k-fold), then fit the chosen one
    (``config.predictor``) on all usable rows and save it, bound to model and device, with
    ``<out>.json`` (metrics) and ``<out>.calibration.png`` beside it."""
    prof = read_profile(profile_path)
    features = features_for_profile(prof, model=model)
    usable = prof if config.include_noisy else prof.without_noisy()
    kinds = list(config.compare or [k for k in predictor_kinds() if features.lut or k not in _LUT_KINDS])
    if config.predictor not in kinds:
        kinds.insert(0, config.predictor)
    options = {"lpnet": config.lpnet_options(), **{k: {"seed": config.seed} for k in _SEEDED_KINDS}}
    for kind in kinds:  # an unknown name or a missing lookup table fails now, before any work
        make_predictor(kind, features, **options.get(kind, {}))
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
    chosen = make_predictor(config.predictor, features, **options.get(config.predictor, {})).fit(usable)
    chosen.meta["fit"] = config.to_dict()
    chosen.meta["metrics"] = comparison.results[config.predictor]
    out = Path(out)
    chosen.save(out)
    used = len(usable.rows)
    rows = {"total": len(prof.rows), "used": used, "noisy_left_out": len(prof.rows) - used}
    metrics_path = write_json(
        out.with_suffix(".json"),
        {
            "profile": str(prof.path),
            "chosen": config.predictor,
            "fit": config.to_dict(),
            "rows": rows,
            **comparison.to_dict(),
        },
    )
    plot = calibration_plot(
        out.with_suffix(".calibration.png"),
        comparison.measured,
        {comparison.results[k]["label"]: p for k, p in comparison.predicted.items()},
        title=f"{prof.meta['model']} on {prof.meta['backend']}: {len(comparison.measured)} held-out networks",
    )
    return FitResult(chosen, comparison, out, metrics_path, plot, rows)


_LUT_KINDS = ("lut", "lut_linear")
_SEEDED_KINDS = ("gb", "rf", "ridge")
