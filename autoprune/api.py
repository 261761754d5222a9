"""One function per CLI subcommand. Each composes the stages, validates what a user can get wrong
before long work starts, and writes its outputs atomically."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from torch import nn

from autoprune import training
from autoprune._console import Reporter
from autoprune._io import write_json
from autoprune.config import FitConfig, ProtocolConfig, SamplingConfig, SearchConfig, TrainConfig
from autoprune.data import load_dataset
from autoprune.errors import ConfigError, ModelError
from autoprune.export import OnnxExport, export_onnx
from autoprune.graph import ChannelGraph, count_macs_params, dense_widths
from autoprune.latency import Profile, get_backend, measure_widths, profile_model, read_profile
from autoprune.models import create_model, load_checkpoint, read_checkpoint, save_checkpoint
from autoprune.predictor import LatencyPredictor, fit_lpnet
from autoprune.prune import load_pruned, prune_model, save_pruned
from autoprune.report import ModelSummary, markdown_table, write_report
from autoprune.search import (
    Measured,
    check_budget,
    get_criterion,
    open_study,
    ranked_candidates,
    run_search,
    select_by_measurement,
    space_for,
)

_SILENT = Reporter()


# -- train -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    val_accuracy: float


def train(
    model: str,
    *,
    data: str = "digits",
    out: str | Path,
    config: TrainConfig = TrainConfig(),
    image_size: int = 32,
    reporter: Reporter = _SILENT,
) -> TrainResult:
    """Train the dense model on ``data``; save weights plus what they were trained on."""
    ds = load_dataset(data, image_size=image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = create_model(model, num_classes=ds.num_classes)
    _check_forward(net, model, [1, *ds.input_shape])
    training.train(
        net,
        ds.train,
        epochs=config.epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        weight_decay=config.weight_decay,
        seed=config.seed,
        on_step=reporter.task(f"train {model}"),
    )
    acc = training.evaluate(net, ds.val)
    save_checkpoint(
        out,
        net,
        model=model,
        num_classes=ds.num_classes,
        input_shape=[1, *ds.input_shape],
        data=data,
        val_accuracy=acc,
        train=config.to_dict(),
    )
    return TrainResult(Path(out), acc)


# -- profile -----------------------------------------------------------------------------------------
def profile(
    model: str,
    *,
    out: str | Path,
    checkpoint: str | Path | None = None,
    num_classes: int | None = None,
    input_shape: Sequence[int] = (1, 3, 32, 32),
    backend: str = "onnxruntime",
    threads: int = 1,
    sampling: SamplingConfig = SamplingConfig(),
    protocol: ProtocolConfig = ProtocolConfig(),
    reporter: Reporter = _SILENT,
) -> Profile:
    """Measure sub-networks of ``model`` on this machine and append them to the profile ``out``."""
    net, classes = load_model(model, checkpoint=checkpoint, num_classes=num_classes)
    _check_forward(net, model, input_shape)
    return profile_model(
        net,
        model_spec=model,
        num_classes=classes,
        input_shape=input_shape,
        backend=get_backend(backend, threads=threads),
        sampling=sampling,
        protocol=protocol,
        out=out,
        on_sample=reporter.task(f"profile {model}"),
    )


# -- fit ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FitResult:
    predictor: LatencyPredictor
    metrics: dict[str, dict[str, float]]
    path: Path


def fit(profile_path: str | Path, *, out: str | Path, config: FitConfig = FitConfig()) -> FitResult:
    """Train LPNet on a profile; save it (bound to model and device) and its held-out metrics."""
    predictor, metrics = fit_lpnet(read_profile(profile_path), config)
    predictor.save(out)
    write_json(Path(out).with_suffix(".json"), {"metrics": metrics, "fit": config.to_dict()})
    return FitResult(predictor, metrics, Path(out))


# -- search ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchResult:
    run_dir: Path
    budget_ms: float
    dense: ModelSummary
    pruned: ModelSummary
    widths: dict[str, int]
    finalists: list[dict[str, Any]]
    sections: dict[str, str] = field(default_factory=dict)


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
    """Search widths under the budget, keep the most accurate finalist that *measures* within it,
    fine-tune it and save it to ``out/pruned.pt``. Rerunning the same command resumes the study."""
    run_dir = Path(out)
    get_criterion(config.criterion)  # an unknown name fails now, not in the first trial
    ds = load_dataset(data, image_size=image_size)
    lp = LatencyPredictor.load(predictor)
    net, classes = load_model(model, checkpoint=checkpoint, num_classes=ds.num_classes)
    input_shape = list(lp.meta["input_shape"])
    if list(ds.input_shape) != input_shape[1:]:
        raise ConfigError(
            f"the profile measured inputs of {input_shape[1:]} but {data} gives {list(ds.input_shape)}: "
            "pass --image-size to match, or profile at this size"
        )
    example = torch.zeros(1, *input_shape[1:])
    groups = ChannelGraph(copy.deepcopy(net), example).groups
    lp.check_model(groups, model)
    backend = get_backend(lp.meta["backend"], **lp.meta["backend_settings"])
    lp.check_device(backend.fingerprint())
    protocol = ProtocolConfig.from_dict(lp.meta["protocol"])
    space = space_for(groups, lp.meta["sampling"])
    dense_w = dense_widths(groups)
    dense_ms: list[float] = []  # every dense timing, interleaved with the candidates of its batch

    def measure(widths_list: list[dict[str, int]]) -> list[float]:
        """Candidates timed interleaved with the dense network; the dense time is kept for the report."""
        times = measure_widths(
            net, [dense_w, *widths_list], backend=backend, input_shape=input_shape, protocol=protocol
        )
        dense_ms.append(times[0])
        return times[1:]

    run_dir.mkdir(parents=True, exist_ok=True)
    opt_study = open_study(
        storage=storage or f"sqlite:///{run_dir / 'study.db'}",
        study_name=study,
        seed=config.seed,
        trials=config.trials,
    )

    def measure_dense() -> float:
        measure([])  # the dense network alone, on this machine, now
        return dense_ms[-1]

    budget_ms = _resolve_budget(opt_study, config, measure_dense)
    fastest = lp.meta.get("narrowest_ms") or lp.predict(space.narrowest())
    check_budget(budget_ms, fastest_ms=float(fastest))
    _claim_run_dir(
        run_dir,
        "search",
        {
            "model": model,
            "checkpoint": str(checkpoint),
            "data": data,
            "predictor": str(predictor),
            "search": config.to_dict(),
        },
    )

    def evaluate(widths: dict[str, int]) -> float:
        p = prune_model(
            net,
            widths=widths,
            model_spec=model,
            num_classes=classes,
            input_shape=input_shape,
            criterion=config.criterion,
        )
        training.train(p.module, ds.train, epochs=config.finetune_epochs, lr=config.lr, seed=config.seed)
        return training.evaluate(p.module, ds.val)

    run_search(
        opt_study,
        space,
        evaluate=evaluate,
        predict_ms=lp.predict,
        budget_ms=budget_ms,
        trials=config.trials,
        on_trial=reporter.task("search trials"),
    )
    chosen, measured = select_by_measurement(
        ranked_candidates(opt_study, space), measure=measure, budget_ms=budget_ms, finalists=config.finalists
    )
    reporter.log(
        f"finalist trial {chosen.candidate.trial}: {chosen.measured_ms:.4f} ms measured "
        f"(budget {budget_ms:.4f} ms)"
    )

    pruned = prune_model(
        net,
        widths=chosen.candidate.widths,
        model_spec=model,
        num_classes=classes,
        input_shape=input_shape,
        criterion=config.criterion,
    )
    training.train(
        pruned.module,
        ds.train,
        epochs=config.final_epochs,
        lr=config.lr,
        seed=config.seed,
        on_step=reporter.task("fine-tune winner"),
    )
    dense = _summary("dense", net, ds.val, dense_ms[-1], example)
    final = _summary("pruned", pruned.module, ds.val, chosen.measured_ms, example)
    pruned.meta = {
        "budget_ms": budget_ms,
        "measured_ms": chosen.measured_ms,
        "dense_ms": dense.latency_ms,
        "val_accuracy": final.accuracy,
        "backend": lp.meta["backend"],
        "device": lp.meta["device"],
    }
    save_pruned(run_dir / "pruned.pt", pruned)
    finalists = [_finalist_row(m) for m in measured]
    write_json(
        run_dir / "search.json",
        {
            "budget_ms": budget_ms,
            "dense": dense.__dict__,
            "pruned": final.__dict__,
            "widths": pruned.widths,
            "finalists": finalists,
            "trials": len(opt_study.trials),
            "study": study,
            "backend": lp.meta["backend"],
        },
    )
    sections = {
        "Search": _search_section(opt_study.study_name, len(opt_study.trials), finalists, pruned.widths)
    }
    result = SearchResult(run_dir, budget_ms, dense, final, pruned.widths, finalists, sections)
    write_report(
        run_dir / "report.md",
        title=f"autoprune: {model} on {data}",
        dense=dense,
        pruned=final,
        budget_ms=budget_ms,
        sections=sections,
    )
    return result


# -- export ------------------------------------------------------------------------------------------
def export(source: str | Path, *, format: str = "onnx", out: str | Path | None = None) -> OnnxExport:
    """Export a run directory's ``pruned.pt`` (or that file) to ONNX, parity-checked in onnxruntime."""
    if format != "onnx":
        raise ConfigError(
            f"--format {format} is not available yet: use --format onnx, then build an engine with "
            "trtexec --onnx=FILE --saveEngine=model.engine"
        )
    src = Path(source)
    pruned_file = src / "pruned.pt" if src.is_dir() else src
    pruned = load_pruned(pruned_file)
    target = Path(out) if out else pruned_file.with_name("model.onnx")
    return export_onnx(pruned.module, pruned.input_shape, target)


# -- shared helpers ----------------------------------------------------------------------------------
def load_model(
    spec: str, *, checkpoint: str | Path | None = None, num_classes: int | None = None
) -> tuple[nn.Module, int]:
    """Build ``spec`` and load ``checkpoint``; the class count comes from the flag, else the checkpoint."""
    meta = read_checkpoint(checkpoint)[1] if checkpoint else {}
    saved = meta.get("num_classes")
    if num_classes is not None and saved is not None and int(saved) != num_classes:
        raise ModelError(
            f"checkpoint '{checkpoint}' has {saved} classes, not {num_classes}: use matching data"
        )
    classes = num_classes or int(saved or 10)
    net = create_model(spec, num_classes=classes)
    if checkpoint:
        load_checkpoint(net, checkpoint)
    return net.eval(), classes


def _check_forward(net: nn.Module, spec: str, input_shape: Sequence[int]) -> None:
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, *input_shape[1:]))
    except Exception as exc:
        shape = "x".join(str(d) for d in input_shape)
        raise ModelError(
            f"model '{spec}' fails on input {shape} ({type(exc).__name__}): pass a matching --input-shape"
        ) from exc


def _resolve_budget(study: optuna.Study, config: SearchConfig, measure_dense: Callable[[], float]) -> float:
    """The budget in ms. A ratio is taken of the dense latency measured when the study began, and is
    recorded in the study, so a resumed search keeps its budget although a new measurement would differ."""
    if config.budget_ms is not None:
        return config.budget_ms
    ratio = float(config.budget_ratio or 1.0)
    if study.user_attrs.get("budget_ratio") == ratio and "budget_ms" in study.user_attrs:
        return float(study.user_attrs["budget_ms"])
    if "budget_ms" not in study.user_attrs:  # a new study: its budget is fixed by run_search
        study.set_user_attr("budget_ratio", ratio)
    return ratio * measure_dense()


_MAY_CHANGE = frozenset({"trials", "finalists", "final_epochs"})  # may grow between resumed runs


def _without(d: dict[str, Any], keys: frozenset[str]) -> dict[str, Any]:
    return {k: (_without(v, keys) if isinstance(v, dict) else v) for k, v in d.items() if k not in keys}


def _claim_run_dir(run_dir: Path, command: str, settings: dict[str, Any]) -> None:
    """Record the settings of a run directory; refuse to mix another run's settings into it."""
    path = run_dir / f"config.{command}.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if _without(old, _MAY_CHANGE) != _without(settings, _MAY_CHANGE):
            raise ConfigError(
                f"'{run_dir}' holds a {command} run with other settings: pass a new --out, or delete it"
            )
    write_json(path, settings)


def _summary(name: str, net: nn.Module, val: Any, latency_ms: float, example: torch.Tensor) -> ModelSummary:
    macs, params = count_macs_params(net, example)
    return ModelSummary(name, latency_ms, training.evaluate(net, val), params, macs)


def _finalist_row(m: Measured) -> dict[str, Any]:
    return {
        "trial": m.candidate.trial,
        "val_accuracy_after_short_finetune": m.candidate.accuracy,
        "predicted_ms": m.candidate.predicted_ms,
        "measured_ms": m.measured_ms,
        "within_budget": m.within_budget,
    }


def _search_section(
    study: str, n_trials: int, finalists: list[dict[str, Any]], widths: dict[str, int]
) -> str:
    rows = [
        [
            str(f["trial"]),
            f"{100 * f['val_accuracy_after_short_finetune']:.2f} %",
            f"{f['predicted_ms']:.4f}",
            f"{f['measured_ms']:.4f}",
            "yes" if f["within_budget"] else "no",
        ]
        for f in finalists
    ]
    table = markdown_table(
        ["trial", "accuracy (short fine-tune)", "predicted ms", "measured ms", "within budget"], rows
    )
    chosen = ", ".join(f"{k}={v}" for k, v in widths.items())
    return (
        f"Optuna study `{study}`, {n_trials} trials. Finalists, measured:\n\n{table}\n\n"
        f"Chosen widths: {chosen}\n"
    )


# -- demo --------------------------------------------------------------------------------------------
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
    epochs: int = 8,
    samples: int = 100,
    trials: int = 24,
    budget_ratio: float = 0.6,
    finetune_epochs: float = 1.0,
    final_epochs: int = 5,
    reporter: Reporter = _SILENT,
) -> DemoResult:
    """The whole pipeline on the embedded default (resnet20 on digits, onnxruntime CPU), resumable."""
    run = Path(out)
    settings = {
        "epochs": epochs,
        "samples": samples,
        "trials": trials,
        "budget_ratio": budget_ratio,
        "finetune_epochs": finetune_epochs,
        "final_epochs": final_epochs,
    }
    _claim_run_dir(run, "demo", settings)
    ckpt = run / "dense.pt"
    if not ckpt.is_file():
        trained = train(
            DEMO_MODEL, data=DEMO_DATA, out=ckpt, config=TrainConfig(epochs=epochs), reporter=reporter
        )
        reporter.log(f"dense {DEMO_MODEL}: val accuracy {100 * trained.val_accuracy:.2f} % -> {ckpt}")
    prof = profile(
        DEMO_MODEL,
        out=run / "profile.parquet",
        checkpoint=ckpt,
        sampling=SamplingConfig(samples=samples),
        protocol=DEMO_PROTOCOL,
        reporter=reporter,
    )
    reporter.log(f"profile: {len(prof.rows)} sub-networks measured -> {prof.path}")
    fitted = fit(prof.path, out=run / "predictor.pt")
    lp = fitted.metrics["lpnet"]
    reporter.log(
        f"LPNet held-out: MAPE {lp['mape']:.2f} %, within ±10 % {lp['within_10']:.0f} %, "
        f"Kendall τ {lp['kendall_tau']:.3f}"
    )
    config = SearchConfig(
        budget_ratio=budget_ratio, trials=trials, finetune_epochs=finetune_epochs, final_epochs=final_epochs
    )
    found = search(
        DEMO_MODEL,
        checkpoint=ckpt,
        data=DEMO_DATA,
        predictor=fitted.path,
        out=run,
        config=config,
        reporter=reporter,
    )
    onnx = export(run, out=run / "model.onnx")
    sections = {
        "Profile": _profile_section(prof),
        "Latency predictor (held-out networks)": _fit_section(fitted.metrics),
        **found.sections,
        "Export": f"`{onnx.path}`: ONNX opset 17, dynamic batch; "
        f"max |onnxruntime - torch| = {onnx.max_abs_diff:.3g} "
        f"(tolerance {onnx.tolerance:.3g}).\n",
    }
    write_report(
        run / "report.md",
        title=f"autoprune demo: {DEMO_MODEL} on {DEMO_DATA}",
        dense=found.dense,
        pruned=found.pruned,
        budget_ms=found.budget_ms,
        sections=sections,
    )
    return DemoResult(run, found, fitted, onnx)


def _profile_section(prof: Profile) -> str:
    m = prof.meta
    lat = prof.latency_ms()
    return (
        f"`{prof.path}`: {len(prof.rows)} sub-networks of `{m['model']}`, input {m['input_shape']}, backend "
        f"`{m['backend']}` {m['backend_settings']}, on {m['device']['cpu']} ({m['device']['logical_cores']} "
        f"logical cores). Latency range {lat.min():.4f}–{lat.max():.4f} ms (median of round medians).\n"
    )


def _fit_section(metrics: dict[str, dict[str, float]]) -> str:
    rows = [
        [name, f"{m['mape']:.2f}", f"{m['within_10']:.0f}", f"{m['kendall_tau']:.3f}", str(m["n"])]
        for name, m in metrics.items()
    ]
    return (
        markdown_table(["predictor", "MAPE %", "within ±10 % (%)", "Kendall τ", "held-out networks"], rows)
        + "\n"
    )
