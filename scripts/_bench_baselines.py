"""The rows ``bench_tradeoff.py`` builds outside ``autoprune search``: Torch-Pruning's global magnitude
pruning (a scan of global ratios) and NVIDIA ModelOpt's FastNAS (its FLOPs constraint bisected until the
network measures within the budget), each then given the same final fine-tune as every search."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from _bench_cases import INPUT_SHAPE, Prepared
from _bench_record import settings_key, stamp, time_beside_dense, within_ratio
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from autoprune import training
from autoprune._io import atomic_write, write_json
from autoprune.config import SearchConfig
from autoprune.data import DatasetSplits
from autoprune.graph import count_macs_params

SCAN_REPEATS = 3  # interleaved repeats for each scanned or bisected network


def finish(
    model: nn.Module, *, ds: DatasetSplits, seed: int, epochs: float, augment: bool, path: Path
) -> dict[str, Any]:
    """The final fine-tune every method gets (autoprune search's: same epochs, lr, seed, augmentation),
    the network saved, then validation and test top-1 scored once."""
    start = time.perf_counter()
    training.train(model, ds.train, epochs=epochs, lr=SearchConfig.lr, seed=seed, augment=augment)
    finetune_s = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: torch.save(model, p))
    macs, params = count_macs_params(model, torch.zeros(INPUT_SHAPE))
    return {
        "model_path": str(path),
        "kind": "module",
        "finetune_s": finetune_s,
        "val_accuracy": training.evaluate(model, ds.val),
        "test_accuracy": training.evaluate(model, ds.test),  # once per final network
        "macs": macs,
        "params": params,
    }


# --- Torch-Pruning global ---------------------------------------------------------------------------


def tp_global(net: nn.Module, ratio: float, *, round_to: int, max_ratio: float) -> tuple[nn.Module, int]:
    """Torch-Pruning's global L1 magnitude pruning at ``ratio`` (no group above ``max_ratio``), called
    directly. Returns the pruned copy and how many groups TP skipped because rounding would have
    emptied a layer (it prunes nothing there, silently)."""
    model = copy.deepcopy(net).eval()
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    pruner = tp.pruner.MetaPruner(
        model,
        torch.zeros(INPUT_SHAPE),
        importance=tp.importance.GroupMagnitudeImportance(p=1),
        global_pruning=True,
        pruning_ratio=ratio,
        max_pruning_ratio=max_ratio,
        ignored_layers=[classifier],
        round_to=round_to,
    )
    skipped = [0]
    check = pruner.DG.check_pruning_group

    def counting_check(group: Any) -> bool:
        ok = bool(check(group))
        skipped[0] += not ok
        return ok

    pruner.DG.check_pruning_group = counting_check  # type: ignore[method-assign]
    with torch.enable_grad():
        pruner.step()
    return model, skipped[0]


def tp_scan(prep: Prepared, *, step: float, cache: Path, log: Any) -> dict[str, Any]:
    """Global ratios step, 2 step, ... up to 1 - min_ratio, each pruned network timed beside the dense
    one, until one measures within the budget: the widest that does (latency is not monotone in the
    ratio, hence a scan, not a bisection). Seed-independent (magnitudes only): one scan per case."""
    if cache.is_file():
        return dict(json.loads(cache.read_text()))
    case, net = prep.case, prep.dense()
    start, tried, chosen = time.perf_counter(), [], None
    for k in range(1, math.floor((1 - case.min_ratio) / step + 1e-9) + 1):
        ratio = round(k * step, 6)
        model, skipped = tp_global(net, ratio, round_to=case.round_to, max_ratio=1 - case.min_ratio)
        timing = time_beside_dense(net, [model], input_shape=INPUT_SHAPE, repeats=SCAN_REPEATS)[0]
        ok = within_ratio(timing, case.ratio)
        macs = count_macs_params(model, torch.zeros(INPUT_SHAPE))[0]
        tried.append({"global_ratio": ratio, **timing, "macs": macs, "skipped": skipped, "within": ok})
        log(f"  tp-global {ratio:.2f}: {timing['ratio']:.3f} of dense, {'within' if ok else 'over'}")
        if ok:
            chosen = ratio
            break
    result = {"tried": tried, "chosen": chosen, "s": time.perf_counter() - start, **stamp({})}
    write_json(cache, result)
    return result


def tp_row(
    prep: Prepared,
    seed: int,
    *,
    settings: dict[str, Any],
    ds: DatasetSplits,
    augment: bool,
    path: Path,
    work: Path,
    log: Any,
) -> dict[str, Any]:
    case = prep.case
    scan_key = settings_key(
        {k: v for k, v in settings.items() if k not in ("seed", "final_epochs", "augment")}
    )
    scan = tp_scan(prep, step=settings["step"], cache=work / "tp" / f"{case.name}-{scan_key}.json", log=log)
    scanned = "; ".join(
        f"{t['global_ratio']:.2f} → {t['ms']:.4f} ms ({t['ratio']:.3f} of dense"
        + (f", {t['skipped']} groups skipped" if t["skipped"] else "")
        + ")"
        for t in scan["tried"]
    )
    if scan["chosen"] is None:
        return {"failed": f"no global ratio up to {1 - case.min_ratio:.2f} measured within budget: {scanned}"}
    model, _ = tp_global(prep.dense(), scan["chosen"], round_to=case.round_to, max_ratio=1 - case.min_ratio)
    row = finish(model, ds=ds, seed=seed, epochs=settings["final_epochs"], augment=augment, path=path)
    return {
        **row,
        "search_s": scan["s"],
        "training_epochs": settings["final_epochs"],
        "scan": scan["tried"],
        "note": f"global ratio {scan['chosen']:.2f} (scan, shared by the seeds: {scanned})",
    }


# --- NVIDIA ModelOpt FastNAS ------------------------------------------------------------------------


def modelopt_missing() -> str | None:
    """Why ModelOpt cannot run here (None: it can): an optional benchmark dependency."""
    try:
        import modelopt.torch.prune  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install raising anything on import
        return f"{type(exc).__name__}: {exc}"
    return None


def _val_subset(val: Dataset, items: int, seed: int) -> Dataset:
    """The first ``items`` of a seeded shuffle of the validation split (all of it for 0), in memory."""
    order = torch.randperm(len(val), generator=torch.Generator().manual_seed(seed))  # type: ignore[arg-type]
    chosen = order if items <= 0 else order[:items]
    x, y = next(iter(DataLoader(Subset(val, chosen.tolist()), batch_size=len(chosen))))
    return TensorDataset(x, y)


def fastnas(
    net: nn.Module,
    *,
    flops_pct: float,
    ds: DatasetSplits,
    seed: int,
    settings: dict[str, Any],
    checkpoint: Path,
    val: Dataset,
    log_file: Path,
) -> nn.Module | None:
    """``modelopt.torch.prune.prune(mode="fastnas")`` at ``flops_pct`` % of the dense FLOPs; None when no
    network of its search space is that small. Its sensitivity map (one score per layer and width, the
    expensive part) is kept in ``checkpoint`` and reused by every later call for this model and seed."""
    import modelopt.torch.prune as mtp

    # Per-layer width choices: FastNAS's own 0.05 steps of the layer's width, from min_ratio up, each
    # rounded to a multiple of channel_divisor (make_divisible: >= the divisor, never > 10 % below).
    ratios = tuple(round(0.05 * i, 2) for i in range(1, 21) if 0.05 * i >= settings["min_ratio"] - 1e-9)
    conv = {"channels_ratio": ratios, "channel_divisor": settings["round_to"]}
    norm = {"features_ratio": ratios, "feature_divisor": settings["round_to"]}
    mode = [("fastnas", {"nn.Conv2d": conv, "nn.BatchNorm2d": norm, "nn.Linear": norm})]
    loader = DataLoader(ds.train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(seed))
    config = {
        "data_loader": loader,  # BatchNorm calibration before each score: this many batches of it
        "max_iter_data_loader": settings["calibration_batches"],
        "score_func": lambda m: training.evaluate(m, val),  # the validation split, never test
        "checkpoint": str(checkpoint),
        "verbose": False,
    }
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            model, _ = mtp.prune(
                copy.deepcopy(net),
                mode=mode,
                constraints={"flops": f"{flops_pct:g}%"},
                dummy_input=torch.zeros(INPUT_SHAPE),
                config=config,
            )
        except ValueError as exc:
            if "NOT all constraints can be satisfied" in str(exc):
                return None
            raise
    for m in model.modules():  # a plain module from here on: drop ModelOpt's bookkeeping
        for attr in ("_modelopt_state", "_modelopt_state_version"):
            m.__dict__.pop(attr, None)
    return model.eval()


def modelopt_row(
    prep: Prepared,
    seed: int,
    *,
    settings: dict[str, Any],
    ds: DatasetSplits,
    augment: bool,
    path: Path,
    work: Path,
    log: Any,
) -> dict[str, Any]:
    """Bisect FastNAS's FLOPs percentage for the largest network that measures within the budget (each
    step cached), then the same final fine-tune as every method."""
    missing = modelopt_missing()
    if missing is not None:
        return {
            "failed": f"NVIDIA ModelOpt is not installed here ({missing}): pip install "
            "nvidia-modelopt==0.47.0 torchprofile==0.0.4 requests huggingface_hub"
        }
    case, net = prep.case, prep.dense()
    # The sensitivity map depends on the model, data, grid and calibration, not on the budget: shared.
    smap = work / "modelopt" / f"{case.model}-{case.data}-s{seed}-{settings['map_key']}.pth"
    smap_info = smap.with_suffix(".json")
    folder = work / "modelopt" / f"{case.name}-s{seed}-{path.stem}"
    steps_path, best_path = folder / "steps.json", folder / "best.pt"
    folder.mkdir(parents=True, exist_ok=True)
    steps: list[dict[str, Any]] = json.loads(steps_path.read_text()) if steps_path.is_file() else []
    val = _val_subset(ds.val, settings["val_items"], seed)
    lo, hi = 0.0, 100.0
    for i in range(settings["bisect_steps"]):
        pct = round((lo + hi) / 2, 3)
        if i < len(steps):
            step = steps[i]
        else:
            built = smap.is_file()
            start = time.perf_counter()
            model = fastnas(
                net,
                flops_pct=pct,
                ds=ds,
                seed=seed,
                settings=settings,
                checkpoint=smap,
                val=val,
                log_file=folder / "modelopt.log",
            )
            step = {"flops_pct": pct, "s": time.perf_counter() - start, "feasible": model is not None}
            if not built and smap.is_file():
                write_json(smap_info, {"built_by": folder.name, "s": step["s"]})
            if model is not None:
                timing = time_beside_dense(net, [model], input_shape=INPUT_SHAPE, repeats=3)[0]
                macs = count_macs_params(model, torch.zeros(INPUT_SHAPE))[0]
                step.update(timing, macs=macs, within=within_ratio(timing, case.ratio))
                if step["within"]:  # the largest within budget so far: bisection only goes up from here
                    atomic_write(best_path, lambda p, m=model: torch.save(m, p))
            steps.append(step)
            write_json(steps_path, steps)
            log(
                f"  modelopt {pct:g} % FLOPs: " + (f"{step['ratio']:.3f} of dense" if model else "infeasible")
            )
        if step["feasible"] and not step["within"]:
            hi = pct
        else:  # within budget (keep it, look wider) or below FastNAS's narrowest network (look wider)
            lo = pct
    dense_macs = count_macs_params(net, torch.zeros(INPUT_SHAPE))[0]
    tried = "; ".join(
        f"{s['flops_pct']:g} % → "
        + (
            f"{s['ratio']:.3f} of dense latency, {s['macs'] / dense_macs:.3f} of its MACs"
            if s["feasible"]
            else "infeasible (below its narrowest network)"
        )
        for s in steps
    )

    shared = json.loads(smap_info.read_text()) if smap_info.is_file() else {}
    map_s = shared.get("s", 0.0) if shared.get("built_by") != folder.name else 0.0
    if not any(s.get("within") for s in steps):
        return {"failed": f"FastNAS could not reach the budget: {tried}"}
    best = max((s for s in steps if s.get("within")), key=lambda s: s["flops_pct"])
    model = torch.load(best_path, weights_only=False)
    row = finish(model, ds=ds, seed=seed, epochs=settings["final_epochs"], augment=augment, path=path)
    note = f"FLOPs constraint {best['flops_pct']:g} % (bisected: {tried})"
    if map_s:
        note += f"; sensitivity map built by {shared['built_by']} ({map_s:.0f} s, counted in search s)"
    return {
        **row,
        "search_s": map_s + sum(s["s"] for s in steps),
        "training_epochs": settings["final_epochs"],
        "bisection": steps,
        "note": note,
    }
