"""The headline: test accuracy at the same *measured* latency, autoprune's strategies against what a user
gets by hand (uniform pruning, Torch-Pruning's global magnitude pruning, a FLOPs-constrained search) and
against NVIDIA ModelOpt's FastNAS, on well-trained bases where the allocation matters (issue 18).

    python scripts/bench_tradeoff.py --work DIR [--cases ...] [--methods ...]

Cases: vgg11_bn on CIFAR-10 at 30 % and 50 % of the dense latency (from the shared trained base),
resnet56 on CIFAR-10 at 50 % (base trained here with augmentation), resnet20 on Fashion-MNIST at 50 %.
Every method of a case gets the same budget ratio (each search times its own dense reference), the same
final fine-tune and the same seeds. Every step is cached in DIR (data, bases, profiles, one JSON per row
keyed by its settings, stamped with the code and versions that produced it), so an interrupted run
continues where it stopped: rerun the same command. The final networks of a case are then timed beside
the dense network (onnxruntime CPU, 1 thread, batch 1) and judged on their ratio to it; each was scored
once on the test split when it was made. Writes docs/benchmarks/tradeoff.md (``--out``).

Beside it: ``_bench_cases.py`` (the cases, data, bases, profiles), ``_bench_search.py`` (autoprune's
rows), ``_bench_baselines.py`` (Torch-Pruning and ModelOpt rows), ``_bench_record.py`` (provenance,
settings keys, timing beside the dense network), ``_bench_table.py`` (the markdown).
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any

from _bench_baselines import modelopt_row, tp_row
from _bench_cases import CASES, DEFAULT_CASES, INPUT_SHAPE, Prepared, prepare, seeds_of
from _bench_record import load_network, process_code, settings_key, stamp, time_beside_dense
from _bench_search import PROXY_BATCHES, PROXY_VAL, adapt_row, search_config, search_row, search_settings
from _bench_table import render

from autoprune import training
from autoprune._io import write_json
from autoprune.data import load_dataset
from autoprune.errors import BudgetError

# "strategy" or "strategy:criterion" (default criterion l1), or one of the baselines built here.
DEFAULT_METHODS = (
    "screen",
    "optuna",
    "uniform",
    "flops",
    "knapsack",
    "halp",
    "gates",
    "tp-global",
    "modelopt",
)
# Earlier rows (issues 10 and 11), run with --methods.
OTHER_METHODS = (
    "knapsack:taylor",
    "optuna:redundancy",
    "optuna:correlation",
    "pfp:pfp",
    "droppruning",
    "stamp",
    "playprune",
    "playprune-5pt",
)


def row_settings(prep: Prepared, method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Everything a row's result depends on besides the code: its cache key."""
    common = {
        **prep.identity,
        "method": method,
        "seed": seed,
        "final_epochs": args.final_epochs,
        "augment": args.augment,
    }
    if method == "tp-global":
        return {**common, "kind": "tp", "step": args.tp_step}
    if method == "modelopt":
        mo = {
            "val_items": (args.proxy_val or PROXY_VAL) if args.modelopt_val is None else args.modelopt_val,
            "calibration_batches": args.proxy_batches or PROXY_BATCHES,
            "round_to": prep.case.round_to,
            "min_ratio": prep.case.min_ratio,
        }
        shared = {k: v for k, v in prep.identity.items() if k != "ratio"}
        return {
            **common,
            **mo,
            "kind": "modelopt",
            "bisect_steps": args.bisect_steps,
            "map_key": settings_key({**shared, **mo}),
        }
    if method == "stamp":
        return {**common, "kind": "adapt"}
    return {**common, "kind": "search", **search_settings(prep.case, method, args)}


def row_path(prep: Prepared, method: str, seed: int, args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    settings = row_settings(prep, method, seed, args)
    name = f"{method.replace(':', '-')}-s{seed}-{settings_key(settings)}"
    return args.work / "rows" / prep.case.name / f"{name}.json", settings


def ensure_row(prep: Prepared, method: str, seed: int, args: argparse.Namespace, log: Any) -> None:
    """Compute and cache one row unless cached. A method that finds no network within the budget is a
    result (cached); any other error is logged to DIR/errors and retried on the next run."""
    cache, settings = row_path(prep, method, seed, args)
    if cache.is_file() and method in (args.redo or ()):
        set_aside(prep, cache)
    if cache.is_file():
        return
    log(f"{prep.case.name} {cache.stem} ...")
    run = args.work / "runs" / prep.case.name / cache.stem
    try:
        if settings["kind"] in ("tp", "modelopt"):
            ds = load_dataset(prep.data)
            augment = training.resolve_augment(args.augment, ds)
            build = tp_row if settings["kind"] == "tp" else modelopt_row
            row = build(
                prep,
                seed,
                settings=settings,
                ds=ds,
                augment=augment,
                path=run.with_suffix(".pt"),
                work=args.work,
                log=log,
            )
            row.setdefault("augment", augment)
        elif settings["kind"] == "adapt":
            row = adapt_row(prep, seed, args, run)
        else:
            row = search_row(prep, *search_config(prep, method, seed, args), run)
    except BudgetError as exc:
        row = {"failed": str(exc)}
    except Exception as exc:
        errors = args.work / "errors" / f"{prep.case.name}-{cache.stem}.log"
        errors.parent.mkdir(parents=True, exist_ok=True)
        errors.write_text(traceback.format_exc())
        log(f"{prep.case.name} {cache.stem} raised {type(exc).__name__}: {exc} (traceback in {errors})")
        return
    row.update(method=method, seed=seed, settings=settings, **stamp(cli_args(args)))
    write_json(cache, row)


def set_aside(prep: Prepared, cache: Path) -> None:
    """--redo: the cached row and what it was computed from (run directory, tp-global's scan, ModelOpt's
    bisection; not ModelOpt's sensitivity map) renamed *.old-TIME, so the row is computed afresh."""
    suffix = f".old-{datetime.now():%Y%m%d-%H%M%S}"
    work, case = cache.parents[2], prep.case.name
    done = [cache, work / "runs" / case / cache.stem, work / "runs" / case / f"{cache.stem}.pt"]
    done += [work / "modelopt" / f"{case}-s{cache.stem.split('-s')[-1].split('-')[0]}-{cache.stem}"]
    if cache.stem.startswith("tp-global-"):
        done += list((work / "tp").glob(f"{case}-*.json"))
    for path in done:
        if path.exists():
            path.rename(path.with_name(path.name + suffix))


def cli_args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


def case_rows(
    prep: Prepared, methods: list[str], args: argparse.Namespace
) -> dict[tuple[str, int], dict[str, Any]]:
    """The cached rows of a case under the current settings: {(method, seed): row}."""
    rows = {}
    for method in methods:
        for seed in prep.seeds:
            cache, _ = row_path(prep, method, seed, args)
            if cache.is_file():
                rows[method, seed] = json.loads(cache.read_text())
    return rows


def case_timings(
    prep: Prepared, rows: dict[tuple[str, int], dict[str, Any]], args: argparse.Namespace, log: Any
) -> dict[str, Any]:
    """Every final network of a case timed beside the dense one in one process; reused only for the very
    same files (a row computed again is timed again, with all the others)."""
    path = args.work / "timing" / f"{prep.case.name}.json"
    done = {f"{m}-s{s}": r for (m, s), r in rows.items() if "failed" not in r}
    networks = {k: f"{r['model_path']}@{Path(r['model_path']).stat().st_mtime_ns}" for k, r in done.items()}
    cached = json.loads(path.read_text()) if path.is_file() else {}
    if cached.get("networks") == networks and cached.get("repeats") == args.timing_repeats:
        return cached
    log(f"{prep.case.name}: timing {len(done)} final networks beside the dense one ...")
    keys = list(done)
    times = (
        time_beside_dense(
            prep.dense(),
            [load_network(done[k]) for k in keys],
            input_shape=INPUT_SHAPE,
            repeats=args.timing_repeats,
        )
        if keys
        else []
    )
    result = {
        "networks": networks,
        "repeats": args.timing_repeats,
        "timings": dict(zip(keys, times, strict=True)),
        **stamp({}),
    }
    write_json(path, result)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True, type=Path, help="cache directory (rerun to resume)")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks/tradeoff.md"))
    p.add_argument(
        "--cifar10",
        default="../shared/datasets/cifar10-jpeg/CIFAR-10-images.tar.gz",
        help="CIFAR-10 as train/ and test/ class folders, or the .tar.gz holding them",
    )
    p.add_argument("--fmnist", default="../shared/datasets/fashion-mnist", help="Fashion-MNIST idx files")
    p.add_argument("--vgg-base", default="../shared/bases/vgg11_bn-cifar10.pt", help="the trained vgg11_bn")
    p.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), choices=list(CASES))
    p.add_argument(
        "--methods",
        nargs="+",
        choices=DEFAULT_METHODS + OTHER_METHODS,
        help="run only these (cached rows of the others still show)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="vgg11_bn at 30 %% and resnet20")
    p.add_argument("--seeds-other", type=int, default=1, help="how many of --seeds the other cases get")
    p.add_argument("--samples", type=int, default=120, help="profiled sub-networks per model")
    p.add_argument("--final-epochs", type=float, default=0.5, help="the final fine-tune, every method")
    p.add_argument(
        "--finetune-epochs",
        type=float,
        default=None,
        help="optuna's per-trial and screen's rerank fine-tune (default 0.1; 0.05 on Fashion-MNIST)",
    )
    p.add_argument("--trials", type=int, default=12, help="optuna, flops (and the other searches)")
    p.add_argument("--screen-trials", type=int, default=200, help="screen: candidates scored by the proxy")
    p.add_argument("--rerank", type=int, default=4, help="screen: candidates fine-tuned beside uniform")
    p.add_argument(
        "--proxy-batches",
        type=int,
        default=None,
        help=f"screen's proxy and ModelOpt: BatchNorm batches of 64 (default {PROXY_BATCHES}, the code's)",
    )
    p.add_argument(
        "--proxy-val",
        type=int,
        default=None,
        help=f"screen's proxy and ModelOpt's score: validation items (default: the code's, {PROXY_VAL})",
    )
    p.add_argument("--gate-trials", type=int, default=2, help="gates, droppruning: trials (each trains)")
    p.add_argument(
        "--gate-epochs",
        type=float,
        default=0.25,
        help="gates, droppruning, halp: epochs of training in the search (per trial)",
    )
    p.add_argument("--halp-trials", type=int, default=None, help="halp: --trials (default: its own, 1)")
    p.add_argument("--resnet56-epochs", type=float, default=3, help="the resnet56 base (augmented)")
    p.add_argument("--tp-step", type=float, default=0.05, help="tp-global: the scan's step of global ratios")
    p.add_argument("--bisect-steps", type=int, default=7, help="modelopt: bisection steps of its FLOPs %%")
    p.add_argument(
        "--modelopt-val",
        type=int,
        default=None,
        help="modelopt: validation items its score reads (default --proxy-val; 0: the whole split)",
    )
    p.add_argument("--timing-repeats", type=int, default=5, help="final timing: interleaved repeats")
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fine-tunes augment (default: where the data suits it)",
    )
    p.add_argument(
        "--redo",
        nargs="+",
        choices=DEFAULT_METHODS + OTHER_METHODS,
        help="compute these methods' rows afresh (the cached ones, of the selected cases and seeds, are kept "
        "as *.old-TIME)",
    )
    p.add_argument("--render-only", action="store_true", help="only time and tabulate the cached rows")
    args = p.parse_args(argv)
    args.work = args.work.resolve()
    return args


def log(msg: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    process_code()  # the code this run imports, recorded with every row
    cases = [CASES[name] for name in args.cases]
    methods = list(dict.fromkeys([*(args.methods or DEFAULT_METHODS), *(args.redo or ())]))
    prepared: dict[str, Prepared] = {}
    if not args.render_only:
        # Seed by seed across the cases, so the first seed of every case (the headline first) comes early;
        # a case whose base takes hours to train after all the others.
        for group in ([c for c in cases if not c.late], [c for c in cases if c.late]):
            for i in range(max((len(seeds_of(c, args)) for c in group), default=0)):
                for case in group:
                    prep = prepared.get(case.name) or prepare(case, args, log)
                    prepared[case.name] = prep
                    if i < len(prep.seeds):
                        for method in methods:
                            ensure_row(prep, method, prep.seeds[i], args, log)
    tables = []
    shown = [c for c in CASES.values() if c.name in args.cases or not c.smoke]
    for case in shown:
        prep = prepared.get(case.name) or prepare(case, args, log, build=False)
        if prep is None:
            continue
        candidates = list(dict.fromkeys([*DEFAULT_METHODS, *methods, *OTHER_METHODS]))
        rows = case_rows(prep, candidates, args)
        if not rows:
            continue
        listed = [
            m for m in candidates if m in DEFAULT_METHODS or m in methods or any(k[0] == m for k in rows)
        ]
        tables.append((prep, listed, rows, case_timings(prep, rows, args, log)))
    render(tables, args, command=["python", *sys.argv], out=args.out)


if __name__ == "__main__":
    main()
