"""One network for two devices (``autoprune search --target``): its accuracy against the best network
for each budget alone, and how often the network searched for one budget breaks the other.

    python scripts/bench_devices.py --work DIR [--model resnet56] [--data digits] [--seeds 0 1 2]
        [--budgets 50 50] [--out docs/benchmarks/several-devices.md]

Two targets on this machine whose latency landscapes differ: A = onnxruntime CPU, 1 thread, batch 1
(small layers: fixed per-layer costs weigh) and B = torch CPU, 1 thread, batch 32 (compute-bound). The
dense network is trained once; each target is profiled and an LPNet fit (``autoprune profile``/``fit``).
Per seed, three searches with the same settings: ``joint`` (``--target A:a% --target B:b%``), ``A
alone`` and ``B alone``; each final network is fine-tuned alike and scored once on the test split. Every
final network is then timed on both devices beside the dense network (interleaved rounds, ratio per
round pair, median over repeats) and judged against each budget with the margin autoprune's finalists
need. Every step is cached in DIR; rerun to resume, ``--render-only`` to tabulate.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_record import process_code, settings_key, stamp, t_interval, time_beside_dense

from autoprune import api
from autoprune._io import write_json, write_text
from autoprune.config import FitConfig, ProtocolConfig, SamplingConfig, SearchConfig, TrainConfig
from autoprune.latency.fingerprint import cpu_model
from autoprune.models import load_model
from autoprune.prune import load_pruned
from autoprune.search import margin_for

# name -> (backend, options, batch)
DEVICES = {"A": ("onnxruntime", {"threads": 1}, 1), "B": ("torch", {"threads": 1}, 32)}
# B's inferences take tens of ms at batch 32: fewer iterations per round keep its profile short.
PROTOCOLS = {"A": ProtocolConfig(), "B": ProtocolConfig(iterations=5, min_round_ms=100.0)}
METHODS = ("joint", "A alone", "B alone")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def prepare(args: argparse.Namespace) -> tuple[Path, dict[str, Path]]:
    """The dense network and each device's predictor (cached)."""
    ckpt = args.work / "dense.pt"
    if not ckpt.is_file():
        log(f"training {args.model} on {args.data} for {args.epochs:g} epochs ...")
        api.train(args.model, data=args.data, out=ckpt, config=TrainConfig(epochs=args.epochs, seed=0))
    predictors = {}
    for name, (backend, options, batch) in DEVICES.items():
        pred = args.work / f"{name}.pt"
        if not pred.is_file():
            log(f"profiling {args.samples} sub-networks on {name} ({backend} {options}, batch {batch}) ...")
            api.profile(
                args.model, out=args.work / f"{name}.parquet", checkpoint=ckpt, backend=backend,
                backend_options=options, input_shape=(batch, 3, 32, 32),
                sampling=SamplingConfig(samples=args.samples), protocol=PROTOCOLS[name],
            )  # fmt: skip
            api.fit(args.work / f"{name}.parquet", out=pred, config=FitConfig(predictor="lpnet"))
        predictors[name] = pred
    return ckpt, predictors


def search_row(
    args: argparse.Namespace, method: str, seed: int, ckpt: Path, preds: dict[str, Path]
) -> dict[str, Any]:
    """One search (cached; with --render-only, only what is cached): its final network, test accuracy and
    what search.json says per target."""
    a, b = args.budgets
    settings = {"method": method, "seed": seed, "budgets": [a, b], "trials": args.trials,
                "final_epochs": args.final_epochs, "model": args.model, "data": args.data,
                "measure_seconds": args.measure_seconds}  # fmt: skip
    key = settings_key(settings)
    cache = args.work / "rows" / f"{method.replace(' ', '-')}-s{seed}-{key}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    if args.render_only:
        return {}
    run = args.work / "runs" / cache.stem
    first, ratio, targets = {
        "joint": ("A", a, (f"{preds['B']}:{b}%",)),
        "A alone": ("A", a, ()),
        "B alone": ("B", b, ()),
    }[method]
    config = SearchConfig(
        budget_ratio=ratio / 100,
        targets=targets,
        trials=args.trials,
        final_epochs=args.final_epochs,
        seed=seed,
    )
    log(f"{method} seed {seed} ...")
    start = time.perf_counter()
    s = api.search(
        args.model, checkpoint=ckpt, data=args.data, predictor=preds[first], out=run, config=config
    )
    record = json.loads((run / "search.json").read_text())
    row = {
        **stamp(settings),
        "run": str(run),
        "widths": s.widths,
        "test_accuracy": s.pruned.test_accuracy,
        "val_accuracy": s.pruned.accuracy,
        "targets": record.get("targets"),
        "seconds": time.perf_counter() - start,
    }
    write_json(cache, row)
    return row


def timing(
    args: argparse.Namespace, ckpt: Path, rows: dict[tuple[str, int], dict[str, Any]]
) -> dict[str, Any]:
    """Every final network timed on both devices beside the dense one (cached per set of networks)."""
    runs = sorted({r["run"] for r in rows.values()})
    path = args.work / "timing.json"
    cached = json.loads(path.read_text()) if path.is_file() else {}
    if cached.get("runs") == runs and cached.get("repeats") == args.repeats:
        return cached
    dense, _ = load_model(args.model, checkpoint=ckpt, num_classes=10)
    nets = [load_pruned(Path(r) / "pruned.pt").module for r in runs]
    out: dict[str, Any] = {
        "runs": runs,
        "repeats": args.repeats,
        "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
    }
    for name, (backend, options, batch) in DEVICES.items():
        log(f"timing {len(nets)} final networks on {name} beside the dense one ...")
        got = time_beside_dense(dense, nets, input_shape=(batch, 3, 32, 32), repeats=args.repeats,
                                backend=(backend, options), protocol=PROTOCOLS[name])  # fmt: skip
        out[name] = dict(zip(runs, got, strict=True))
    write_json(path, out)
    return out


def render(
    args: argparse.Namespace, rows: dict[tuple[str, int], dict[str, Any]], timed: dict[str, Any]
) -> None:
    budgets = dict(zip(DEVICES, args.budgets, strict=True))
    lines = [
        "# One network for two devices",
        "",
        "```",
        shlex.join(["python", *sys.argv]),
        "```",
        "",
        f"- rendered {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC at code {process_code()['id']}; "
        f"machine: {cpu_model()}, {platform.machine()}",
        f"- model {args.model} on {args.data} (dense trained {args.epochs:g} epochs); targets: "
        + "; ".join(
            f"{n} = {b} {o}, batch {bs}, budget {budgets[n]} % of its dense latency"
            for n, (b, o, bs) in DEVICES.items()
        )
        + f"; profiles of {args.samples} sub-networks each, LPNet",
        f"- every search: `autoprune search` defaults (strategy optuna), {args.trials} trials, final "
        f"fine-tune {args.final_epochs:g} epochs, `--measure-seconds {args.measure_seconds:g}`, the same "
        "seed per column; `joint` = "
        f"`--target A:{budgets['A']:g}% --target B:{budgets['B']:g}%`",
        f"- latency: each final network timed on each device beside the dense network ({args.repeats} "
        "repeats, ratio per round pair, median); 'meets' = ratio x (1 + margin) <= budget, the margin "
        "autoprune's finalists need (the protocol's 3 % or the ratio's spread over repeats)",
        "",
    ]
    table = ["| method | seeds | test top-1 % (mean ± std) | Δ top-1 vs joint, pp (mean [95 % t-interval]) "
             "| ratio on A (mean, max) | meets A | ratio on B (mean, max) | meets B | worst excess over a "
             "budget |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    seeds = sorted({s for _, s in rows})
    for method in METHODS:
        mine = [(s, rows[method, s]) for s in seeds if (method, s) in rows]
        if not mine:
            continue
        acc = [100 * r["test_accuracy"] for _, r in mine]
        diffs = [
            100 * (r["test_accuracy"] - rows["joint", s]["test_accuracy"])
            for s, r in mine
            if ("joint", s) in rows
        ]
        cells = [
            method,
            str(len(mine)),
            f"{np.mean(acc):.2f} ± {np.std(acc, ddof=1) if len(acc) > 1 else 0:.2f}",
        ]
        if method == "joint":
            cells.append("—")
        else:
            mean, half = t_interval(diffs)
            cells.append(
                f"{mean:+.2f} "
                + (f"[{mean - half:+.2f}, {mean + half:+.2f}]" if half is not None else "(1 seed)")
            )
        worst = -np.inf
        for dev in DEVICES:
            t = [timed[dev][r["run"]] for _, r in mine]
            ratios = [x["ratio"] for x in t]
            needs = [
                x["ratio"] * (1 + margin_for(x["ratio_spread"], tolerance=PROTOCOLS[dev].max_deviation))
                for x in t
            ]
            meets = sum(n <= budgets[dev] / 100 for n in needs)
            worst = max(worst, *(100 * (n / (budgets[dev] / 100) - 1) for n in needs))
            cells += [f"{np.mean(ratios):.3f}, {max(ratios):.3f}", f"{meets}/{len(t)}"]
        cells.append(f"{worst:+.1f} %" if worst > 0 else f"none (closest {worst:+.1f} %)")
        table.append("| " + " | ".join(cells) + " |")
    lines += [
        *table,
        "",
        "Per run (search.json's targets of the joint searches: budget, predicted, measured):",
        "",
    ]
    for (method, s), r in sorted(rows.items()):
        if r.get("targets"):
            said = "; ".join(
                f"{t['target']}: budget {t['budget_ms']:.3f} ms, predicted {t['predicted_ms']:.3f}, "
                + ("predicted only" if t["measured_ms"] is None else f"measured {t['measured_ms']:.3f}")
                for t in r["targets"]
            )
            lines.append(f"- {method} seed {s}: {said}")
    write_text(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--model", default="resnet56")
    p.add_argument("--data", default="digits")
    p.add_argument("--epochs", type=float, default=15)
    p.add_argument("--samples", type=int, default=80)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budgets", type=float, nargs=2, default=[50.0, 50.0], metavar=("A", "B"),
                   help="each device's budget, percent of its dense latency")  # fmt: skip
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--final-epochs", type=float, default=5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--measure-seconds", type=float, default=20.0, help="the searches' --measure-seconds")
    p.add_argument("--render-only", action="store_true")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks/several-devices.md"))
    args = p.parse_args()
    process_code()
    args.work.mkdir(parents=True, exist_ok=True)
    ckpt, preds = prepare(args)
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for seed in args.seeds:
        for method in METHODS:
            rows[method, seed] = search_row(args, method, seed, ckpt, preds)
    rows = {k: v for k, v in rows.items() if v}
    render(args, rows, timing(args, ckpt, rows))


if __name__ == "__main__":
    main()
