"""The rows of ``bench_tradeoff.py`` that autoprune itself makes: ``autoprune search`` with one strategy
(and optionally a criterion), and ``autoprune adapt`` (STAMP), each as a user runs it."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch
from _bench_cases import INPUT_SHAPE, Case, Prepared
from _bench_record import StageClock

from autoprune import api
from autoprune.config import AdaptConfig, SearchConfig
from autoprune.graph import count_macs_params
from autoprune.prune import load_pruned
from autoprune.search.strategies import strategy_class

# Play and Prune is given a tolerance, not the budget.
METHOD_SETTINGS: dict[str, dict[str, Any]] = {
    "playprune": {"budget_ratio": None, "max_accuracy_drop": 2.0},
    "playprune-5pt": {"strategy": "playprune", "budget_ratio": None, "max_accuracy_drop": 5.0},
}
# Strategies that train the network itself while searching: their final network keeps those weights.
TRAINS_NETWORK = ("gates", "droppruning", "halp")
# The screen proxy's settings when not given: the code's defaults (also ModelOpt's calibration and score).
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SearchConfig)}
PROXY_BATCHES, PROXY_VAL = int(_DEFAULTS.get("proxy_batches", 5)), int(_DEFAULTS.get("proxy_val", 1000))
FINAL_STAGE = "fine-tune winner"  # api.search's progress label for the final fine-tune


def finetune_epochs(case: Case, args: Any) -> float:
    """The searches' short fine-tune (optuna's trials, screen's rerank): --finetune-epochs, else 0.05 epoch
    on Fashion-MNIST (60 k images) and 0.1 elsewhere."""
    if args.finetune_epochs is not None:
        return float(args.finetune_epochs)
    return 0.05 if case.data == "fmnist" else 0.1


def search_settings(case: Case, method: str, args: Any) -> dict[str, Any]:
    """The benchmark's arguments that shape one search (its cache key, with the case and seed): not the
    SearchConfig itself, whose new fields and defaults belong to the code (rows are stamped with it)."""
    strategy = METHOD_SETTINGS.get(method, {}).get("strategy", method.partition(":")[0])
    if strategy == "screen":
        return {
            "trials": args.screen_trials,
            "finetune_epochs": finetune_epochs(case, args),
            "rerank": args.rerank,
            "proxy_batches": args.proxy_batches,
            "proxy_val": args.proxy_val,
        }
    if strategy in TRAINS_NETWORK:
        return {
            "trials": args.halp_trials if strategy == "halp" else args.gate_trials,
            "finetune_epochs": args.gate_epochs,
        }
    return {"trials": args.trials, "finetune_epochs": finetune_epochs(case, args)}


def search_config(prep: Prepared, method: str, seed: int, args: Any) -> tuple[SearchConfig, list[str]]:
    """The SearchConfig of one search row, and the screen settings given that this code's SearchConfig and
    strategy do not take (dropped, and said so in the row). Unset (None) screen settings: the code's."""
    strategy, _, criterion = method.partition(":")
    overrides = dict(METHOD_SETTINGS.get(method, {}))
    strategy = overrides.pop("strategy", strategy)
    shape = search_settings(prep.case, method, args)
    kw: dict[str, Any] = {
        "budget_ratio": prep.case.ratio,
        "strategy": strategy,
        "criterion": criterion or "l1",
        "final_epochs": args.final_epochs,
        "seed": seed,
        "trials": shape.pop("trials"),
        "finetune_epochs": shape.pop("finetune_epochs"),
    }
    fields = {f.name for f in dataclasses.fields(SearchConfig)}
    if "augment" in fields:
        kw["augment"] = args.augment
    try:
        own = {o.name for o in strategy_class(strategy).options}
    except Exception:  # a strategy not there (yet): its row fails when it runs
        own = set()
    options, dropped = {}, []
    for name, value in shape.items():
        if value is None:
            continue
        if name in own:
            options[name] = value
        elif name in fields:
            kw[name] = value
        else:
            dropped.append(name)
    kw.update(overrides)
    return SearchConfig(**kw, strategy_options=options), dropped


def search_row(prep: Prepared, config: SearchConfig, dropped: list[str], run: Path) -> dict[str, Any]:
    """``autoprune search`` as a user runs it; the final fine-tune's start (from its progress callback)
    splits the search's wall time from the fine-tune's."""
    clock = StageClock()
    result = api.search(
        prep.case.model,
        checkpoint=prep.checkpoint,
        data=prep.data,
        predictor=prep.predictor,
        out=run,
        config=config,
        reporter=clock,
    )
    total_s = time.perf_counter() - clock.start
    meta = load_pruned(run / "pruned.pt").meta
    record = json.loads((run / "search.json").read_text())
    search_s = clock.since_start(FINAL_STAGE)
    strategy = config.strategy_name
    trained = config.finetune_epochs if strategy in TRAINS_NETWORK else 0.0
    if strategy == "playprune":  # each accepted step fine-tuned the weights the next one starts from
        trained = config.finetune_epochs * _accepted_steps(run)
    notes = [f"not given to this code's screen: {', '.join(dropped)}"] if dropped else []
    if config.max_accuracy_drop is not None:
        notes.append(f"tolerance {config.max_accuracy_drop:g} points, no budget")
    return {
        "model_path": str(run / "pruned.pt"),
        "kind": "autoprune",
        "search_s": total_s if search_s is None else search_s,
        "search_s_includes_finetune": search_s is None,
        "total_s": total_s,
        "test_accuracy": result.pruned.test_accuracy,
        "val_accuracy": result.pruned.accuracy,
        "search_ms": result.pruned.latency_ms,
        "budget_ms": result.budget_ms,
        "reference_ms": meta.get("reference_ms"),  # the search's own dense reference
        "augment": meta.get("augment"),
        "params": result.pruned.params,
        "macs": result.pruned.macs,
        "widths": result.widths,
        "training_epochs": trained + config.final_epochs,
        "summary": record.get("summary") or {},
        "config": config.to_dict(),
        "note": "; ".join(notes),
    }


def _accepted_steps(run: Path) -> int:
    import optuna

    study = optuna.load_study(study_name="autoprune", storage=f"sqlite:///{run / 'study.db'}")
    return sum(bool(t.user_attrs.get("accepted")) for t in study.trials)


def adapt_row(prep: Prepared, seed: int, args: Any, run: Path) -> dict[str, Any]:
    """``autoprune adapt`` (STAMP) with the case's data as reference and target; the same final fine-tune."""
    config = AdaptConfig(
        budget_ratio=prep.case.ratio,
        finetune_epochs=args.final_epochs,
        finetune_lr=SearchConfig.lr,
        seed=seed,
    )
    start = time.perf_counter()
    result = api.adapt(
        prep.case.model,
        checkpoint=prep.checkpoint,
        reference=prep.data,
        data=prep.data,
        predictor=prep.predictor,
        out=run,
        config=config,
    )
    pruned = load_pruned(run / "pruned.pt").module
    macs, params = count_macs_params(pruned, torch.zeros(INPUT_SHAPE))
    return {
        "model_path": str(run / "pruned.pt"),
        "kind": "autoprune",
        "search_s": result.meta_seconds + result.adapt_seconds,
        "total_s": time.perf_counter() - start,
        "test_accuracy": result.test_accuracy,
        "val_accuracy": result.val_accuracy,
        "search_ms": result.measured_ms,
        "params": params,
        "macs": macs,
        "widths": result.widths,
        "training_epochs": config.finetune_epochs,
        "config": config.to_dict(),
        "note": f"meta-training {result.meta_seconds:.0f} s, adaptation {result.adapt_seconds:.1f} s",
    }
