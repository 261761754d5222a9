"""One function per CLI subcommand. Each composes the stages, validates what a user can get wrong
before long work starts, and writes its outputs atomically."""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from torch import nn
from torch.utils.data import DataLoader

from autoprune import training
from autoprune._console import Reporter
from autoprune._io import write_json
from autoprune.config import FitConfig, ProtocolConfig, SamplingConfig, SearchConfig, TrainConfig
from autoprune.data import load_dataset
from autoprune.errors import ConfigError, ModelError, ProfileError
from autoprune.export import OnnxExport, TensorRTExport, export_onnx, export_tensorrt
from autoprune.graph import ChannelGraph, count_macs_params, dense_widths
from autoprune.latency import (
    EngineConfig,
    Profile,
    cuda_index,
    default_profile_path,
    device_identity,
    get_backend,
    lut_path,
    measure_widths,
    profile_lut,
    profile_model,
    read_lut,
    read_profile,
)
from autoprune.models import create_model, load_checkpoint, read_checkpoint, save_checkpoint
from autoprune.predictor import (
    ActiveAcquirer,
    Comparison,
    Features,
    LatencyPredictor,
    compare,
    layers_of,
    make_predictor,
    predictor_kinds,
)
from autoprune.prune import load_pruned, prune_model, save_pruned
from autoprune.report import (
    PREDICTOR_HEADER,
    ModelSummary,
    calibration_plot,
    markdown_table,
    predictor_rows,
    write_report,
)
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
    out: str | Path | None = None,
    checkpoint: str | Path | None = None,
    num_classes: int | None = None,
    input_shape: Sequence[int] = (1, 3, 32, 32),
    backend: str = "onnxruntime",
    backend_options: dict[str, Any] | None = None,
    sampling: SamplingConfig = SamplingConfig(),
    protocol: ProtocolConfig = ProtocolConfig(),
    lut_grid: int | None = None,
    active: bool = False,
    budget_ms: float | None = None,
    active_initial: int = 20,
    active_batch: int = 10,
    profiles_dir: str | Path = "latency_profiles",
    reporter: Reporter = _SILENT,
) -> Profile:
    """Measure sub-networks of ``model`` on this machine and append them to the profile ``out``
    (default: under ``profiles_dir``, see :func:`autoprune.latency.default_profile_path`). With
    ``lut_grid``, also measure the per-layer lookup table beside it (``<profile>.lut.parquet``).
    With ``active``, the planned networks stop after ``active_initial``; the rest are chosen
    ``active_batch`` at a time where an LPNet ensemble fit on what is measured disagrees most (near
    ``budget_ms`` when given)."""
    if budget_ms is not None and not active:
        raise ConfigError("--budget-ms steers active profiling: add --active, or drop --budget-ms")
    net, classes = load_model(model, checkpoint=checkpoint, num_classes=num_classes)
    _check_forward(net, model, input_shape)
    timer = get_backend(backend, **(backend_options or {}))
    acquire: ActiveAcquirer | None = None
    if active:
        groups = ChannelGraph(copy.deepcopy(net), torch.zeros(1, *input_shape[1:])).groups
        features = Features(groups, layers_of(net, input_shape, groups))
        acquire = ActiveAcquirer(features, budget_ms=budget_ms, batch=active_batch, seed=sampling.seed)
    if out is None:
        out = default_profile_path(profiles_dir, model=model, backend=timer, input_shape=input_shape)
    prof = profile_model(
        net,
        model_spec=model,
        num_classes=classes,
        input_shape=input_shape,
        backend=timer,
        sampling=sampling,
        protocol=protocol,
        out=out,
        on_sample=reporter.task(f"profile {model}"),
        acquire=acquire,
        initial=active_initial,
    )
    if lut_grid is not None:
        profile_lut(
            net,
            model_spec=model,
            input_shape=input_shape,
            backend=timer,
            protocol=protocol,
            sampling=sampling,
            out=lut_path(prof.path),
            grid=lut_grid,
            on_sample=reporter.task(f"lookup table {model}"),
        )
    return prof


# -- fit ---------------------------------------------------------------------------------------------
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


def predictor_features(prof: Profile, *, model: str | None = None) -> Features:
    """The features every predictor of ``prof`` sees: its lookup table's layers and latencies when the
    profile has a table beside it, otherwise the layers of ``model`` (default: the profiled spec)."""
    table_path = lut_path(prof.path)
    if table_path.exists():
        table = read_lut(table_path)
        mismatch = _lut_mismatch(prof.meta, table.meta)
        if mismatch:
            raise ProfileError(
                f"lookup table '{table_path}' was measured with another {mismatch} than its profile: "
                "re-run autoprune profile ... --lut, or move the table away"
            )
        return Features(prof.groups, table.layers, table.tables())
    spec = model or prof.meta["model"]
    if not spec:
        raise ConfigError("the profile does not name its model: pass --model SPEC to derive MACs")
    try:
        net = create_model(spec, num_classes=prof.meta["num_classes"])
    except ModelError as exc:
        raise ModelError(f"{exc} (fit builds the profiled model to derive MACs: pass --model SPEC)") from exc
    return Features(prof.groups, layers_of(net, prof.meta["input_shape"], prof.groups))


def _lut_mismatch(profile_meta: dict[str, Any], table_meta: dict[str, Any]) -> str | None:
    if device_identity(profile_meta["device"]) != device_identity(table_meta["device"]):
        return "device"
    for key in ("groups", "input_shape", "backend", "precision", "backend_settings"):
        if profile_meta.get(key) != table_meta.get(key):
            return key
    return None


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
    features = predictor_features(prof, model=model)
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
    confidence = config.budget_confidence
    if confidence is not None and not lp.has_spread:
        raise ConfigError(
            f"--budget-confidence needs an ensemble's spread; '{predictor}' is a {lp.kind} predictor: "
            "fit with --predictor lpnet"
        )
    predict_ms: Callable[[dict[str, int]], float] = (
        lp.predict if confidence is None else lambda w: lp.predict_upper(w, confidence)
    )
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
        predict_ms=predict_ms,
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
        "precision": lp.meta.get("precision", "fp32"),
        "backend_settings": lp.meta["backend_settings"],
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
def export(
    source: str | Path,
    *,
    format: str = "onnx",
    out: str | Path | None = None,
    precision: str = "fp32",
    max_batch: int | None = None,
    workspace_mib: int = 1024,
    verify: bool = False,
    budget_ms: float | None = None,
    calibration_data: str | None = None,
    calibration_batches: int = 16,
    device: int | str = 0,
) -> OnnxExport | TensorRTExport:
    """Export a run directory's ``pruned.pt`` (or that file): ``onnx`` (parity-checked in onnxruntime)
    or ``tensorrt`` (an engine built with the tensorrt backend's settings, parity-checked against torch,
    measured, with a JSON sidecar). ``verify`` fails when the engine measures over ``budget_ms`` (default:
    the search's budget, when the search measured with this TensorRT precision)."""
    src = Path(source)
    pruned_file = src / "pruned.pt" if src.is_dir() else src
    pruned = load_pruned(pruned_file)
    if format == "onnx":
        return export_onnx(
            pruned.module, pruned.input_shape, Path(out) if out else pruned_file.with_name("model.onnx")
        )
    if format != "tensorrt":
        raise ConfigError(f"unknown --format {format}: use onnx or tensorrt")
    batch = int(pruned.input_shape[0])
    config = EngineConfig(
        precision=precision,
        workspace_mib=workspace_mib,
        min_batch=1,
        opt_batch=batch,
        max_batch=max(batch, max_batch or batch),
    )
    if verify and budget_ms is None:
        budget_ms = _search_budget_for(pruned.meta, precision)
    calibration = None
    if calibration_data is not None:
        if precision != "int8":
            raise ConfigError("--calib-data calibrates int8 only: drop it, or pass --precision int8")
        ds = load_dataset(calibration_data, image_size=int(pruned.input_shape[-1]))
        loader = DataLoader(
            ds.train, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(0)
        )
        calibration = [x for x, _ in itertools.islice(loader, calibration_batches)]
    return export_tensorrt(
        pruned.module,
        pruned.input_shape,
        Path(out) if out else pruned_file.with_name(f"model.{precision}.engine"),
        config=config,
        calibration=calibration,
        verify_budget_ms=budget_ms if verify else None,
        protocol=ProtocolConfig(),
        device=cuda_index(device),
    )


def _search_budget_for(meta: dict[str, Any], precision: str) -> float:
    """The search's budget, if it was measured like this engine will be; else ask for one."""
    searched = f"{meta.get('backend')} {meta.get('precision', 'fp32')}"
    if meta.get("backend") != "tensorrt" or meta.get("precision", "fp32") != precision:
        raise ConfigError(
            f"--verify needs a TensorRT budget, but the search measured with {searched}: pass --budget-ms"
        )
    return float(meta["budget_ms"])


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
    fitted = fit(prof.path, out=run / "predictor.pt", config=FitConfig(folds=0), reporter=reporter)
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
    pruned = load_pruned(run / "pruned.pt")
    onnx = export_onnx(pruned.module, pruned.input_shape, run / "model.onnx")
    sections = {
        "Profile": _profile_section(prof),
        "Latency predictors": _fit_section(fitted),
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


def _fit_section(fitted: FitResult) -> str:
    rows = fitted.rows
    return (
        f"{len(fitted.comparison.measured)} held-out networks; {rows['used']} of {rows['total']} rows used "
        f"({rows['noisy_left_out']} flagged noisy left out). Saved: LPNet.\n\n"
        + markdown_table(PREDICTOR_HEADER, predictor_rows(fitted.comparison.results))
        + "\n"
    )
