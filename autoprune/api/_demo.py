"""``autoprune demo``: the whole pipeline on the embedded default (resnet20 on digits, CPU)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from autoprune._console import Reporter
from autoprune.api._fit import FitResult, fit
from autoprune.api._profile import profile
from autoprune.api._search import SearchResult, search
from autoprune.api._train import train
from autoprune.config import FitConfig, ProtocolConfig, SamplingConfig, SearchConfig, TrainConfig
from autoprune.export import OnnxExport, export_onnx
from autoprune.latency import Profile
from autoprune.prune import load_pruned
from autoprune.report import fit_section, profile_section, write_report
from autoprune.rundir import claim_run_dir
from autoprune.search import strategy_class

_SILENT = Reporter()

DEMO_MODEL = "resnet20"
DEMO_DATA = "digits"
# Shorter than the default protocol so 100 networks profile in about half a minute on 2 cores.
DEMO_PROTOCOL = ProtocolConfig(warmup_ms=100.0, iterations=20, min_round_ms=30.0, rounds=3)


@dataclass(frozen=True)
class DemoResult:
    run_dir: Path
    search: SearchResult
    fit: FitResult
    onnx: OnnxExport


def demo(
    out: str | Path = "runs/demo",
    *,
    epochs: float = 8,
    samples: int = 100,
    trials: int = 24,
    budget_ratio: float = 0.6,
    finetune_epochs: float = 1.0,
    final_epochs: float = 5,
    strategy: str = "optuna",
    reporter: Reporter = _SILENT,
) -> DemoResult:
    """The whole pipeline on the embedded default (resnet20 on digits, onnxruntime CPU), resumable.
    A ``strategy`` that trains against the predictor's gradients (``gates``) gets an LPNet predictor."""
    run = Path(out)
    gradients = strategy_class(strategy).needs_gradients  # an unknown strategy fails before any work
    settings = {
        "epochs": epochs,
        "samples": samples,
        "trials": trials,
        "budget_ratio": budget_ratio,
        "finetune_epochs": finetune_epochs,
        "final_epochs": final_epochs,
        **({"strategy": strategy} if strategy != "optuna" else {}),  # demo runs of before still resume
    }
    claim_run_dir(run, "demo", settings)
    ckpt = run / "dense.pt"
    if not ckpt.is_file():
        trained = train(
            DEMO_MODEL, data=DEMO_DATA, out=ckpt, config=TrainConfig(epochs=epochs), reporter=reporter
        )
        reporter.log(f"dense {DEMO_MODEL}: val accuracy {100 * trained.val_accuracy:.2f} % -> {ckpt}")
    sampling = SamplingConfig(samples=samples)
    prof = profile(DEMO_MODEL, out=run / "profile.parquet", checkpoint=ckpt, sampling=sampling,
                   protocol=DEMO_PROTOCOL, reporter=reporter)  # fmt: skip
    reporter.log(f"profile: {len(prof.rows)} sub-networks measured -> {prof.path}")
    fitted = _fit(prof.path, run, lpnet=gradients, reporter=reporter)
    config = SearchConfig(budget_ratio=budget_ratio, trials=trials, finetune_epochs=finetune_epochs,
                          final_epochs=final_epochs, strategy=strategy)  # fmt: skip
    found = search(DEMO_MODEL, checkpoint=ckpt, data=DEMO_DATA, predictor=fitted.path, out=run, config=config,
                   reporter=reporter)  # fmt: skip
    pruned = load_pruned(run / "pruned.pt")
    onnx = export_onnx(pruned.module, pruned.input_shape, run / "model.onnx")
    _report(run, prof, fitted, found, onnx)
    return DemoResult(run, found, fitted, onnx)


def _fit(profile_path: Path, run: Path, *, lpnet: bool, reporter: Reporter) -> FitResult:
    """The demo's predictor (an LPNet where the strategy needs gradients), its held-out quality logged."""
    config = FitConfig(predictor="lpnet") if lpnet else FitConfig()
    fitted = fit(profile_path, out=run / "predictor.pt", config=config, reporter=reporter)
    held = fitted.metrics[fitted.choice.kind]
    reporter.log(
        f"predictor {fitted.choice.kind} ({fitted.choice.reason}); held-out: MAPE {held['mape']:.2f} %, "
        f"within ±10 % {held['within_10']:.0f} %, Kendall τ {held['kendall_tau']:.3f}"
    )
    return fitted


def _report(run: Path, prof: Profile, fitted: FitResult, found: SearchResult, onnx: OnnxExport) -> None:
    """``run/report.md``: the profile, the predictors, the search's sections and the export."""
    sections = {
        "Profile": profile_section(prof.path, prof.meta, list(prof.latency_ms())),
        "Latency predictors": fit_section(
            len(fitted.comparison.measured), fitted.rows, fitted.comparison.results,
            f"{fitted.choice.kind}, because {fitted.choice.reason}",
        ),
        **found.sections,
        "Export": f"`{onnx.path}`: ONNX opset 17, dynamic batch; max |onnxruntime - torch| = "
        f"{onnx.max_abs_diff:.3g} (tolerance {onnx.tolerance:.3g}).\n",
    }  # fmt: skip
    write_report(run / "report.md", title=f"autoprune demo: {DEMO_MODEL} on {DEMO_DATA}", dense=found.dense,
                 pruned=found.pruned, budget_ms=found.budget_ms, sections=sections)  # fmt: skip
