"""``docs/benchmarks/tradeoff.md`` from the cached rows: the header (command, code, date, machine,
versions, sizing), one table per case with paired differences against ``uniform``, and the hand-written
reading kept from the previous file."""

from __future__ import annotations

import platform
import shlex
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _bench_cases import INPUT_SHAPE, Prepared
from _bench_record import LIBRARIES, PROTOCOL, process_code, t_interval
from _bench_search import PROXY_BATCHES, PROXY_VAL

from autoprune._io import write_text
from autoprune.graph import count_macs_params
from autoprune.latency.fingerprint import cpu_model, versions
from autoprune.report import markdown_table

READING = "<!-- reading -->"
MARKS = ("†", "‡", "§", "¶", "‖", "#")
DATA_NAMES = {"cifar10": "CIFAR-10", "fmnist": "Fashion-MNIST", "digits": "digits (8x8, bundled)"}
HEADER = [
    "method",
    "seeds",
    "within budget",
    "latency ms (ratio to dense)",
    "budget used",
    "Δ latency ratio vs uniform",
    "MACs ratio",
    "params",
    "test top-1 % (mean ± std)",
    "Δ top-1 vs uniform, pp (mean [95 % t-interval])",
    "Δ top-1 per seed",
    "training (epochs)",
    "search s",
    "total s",
    "proxy: screened, s each, τ",
    "notes",
]


def _signed(x: float, digits: int = 2) -> str:
    return f"{x:+.{digits}f}"


def _paired(
    method: str, base: str, seeds: list[int], value: dict[tuple[str, int], float]
) -> list[tuple[int, float]]:
    return [
        (s, value[method, s] - value[base, s]) for s in seeds if (method, s) in value and (base, s) in value
    ]


def _mean_interval(diffs: list[float], digits: int = 2) -> str:
    if not diffs:
        return "-"
    mean, half = t_interval(diffs)
    if half is None:
        return f"{_signed(mean, digits)} (n/a: 1 seed)"
    return f"{_signed(mean, digits)} [{_signed(mean - half, digits)}, {_signed(mean + half, digits)}]"


def case_table(
    prep: Prepared,
    methods: list[str],
    rows: dict[tuple[str, int], dict[str, Any]],
    timing: dict[str, Any],
    marks: dict[str, str],
) -> str:
    case, seeds, times = prep.case, list(prep.seeds), timing["timings"]
    dense_macs = count_macs_params(prep.dense(), torch.zeros(INPUT_SHAPE))[0]
    done = {k: r for k, r in rows.items() if "failed" not in r and f"{k[0]}-s{k[1]}" in times}
    acc = {k: 100 * r["test_accuracy"] for k, r in done.items()}
    ratio = {k: times[f"{k[0]}-s{k[1]}"]["ratio"] for k in done}
    out = []
    for method in methods:
        tried = [s for s in seeds if (method, s) in rows]
        if not tried:
            continue
        ok = [s for s in tried if (method, s) in done]
        failed = sorted({rows[method, s]["failed"] for s in tried if "failed" in rows[method, s]})
        mark = "".join(sorted({marks[rows[method, s]["code"]["id"]] for s in tried} - {""}))
        name = f"{method} {mark}".strip()
        if not ok:
            out.append(
                [name, str(len(tried)), f"0/{len(tried)}", *["-"] * 12, "failed: " + "; ".join(failed)]
            )
            continue
        r = [done[method, s] for s in ok]
        a = np.array([acc[method, s] for s in ok])
        q = np.array([ratio[method, s] for s in ok])
        ms = np.median([times[f"{method}-s{s}"]["ms"] for s in ok])
        d_acc = _paired(method, "uniform", ok, acc)
        d_lat = _paired(method, "uniform", ok, ratio)
        same = sorted(
            {
                f"{o} s{s}"
                for s in ok
                for (o, s2), other in done.items()
                if s2 == s
                and o != method
                and r[ok.index(s)].get("widths")
                and other.get("widths") == r[ok.index(s)]["widths"]
            }
        )
        notes = {x["note"] for x in r if x.get("note")} | {f"failed: {f}" for f in failed}
        notes |= {
            f"s{s}: {done[method, s]['summary']['guard']}"
            for s in ok
            if (done[method, s].get("summary") or {}).get("guard")
        }
        for s in ok:  # screen's calibration: how far the predictor was off for the reranked networks
            cal = (done[method, s].get("summary") or {}).get("calibration") or []
            if cal:
                others = [c["bias"] for c in cal[1:]]
                notes.add(
                    f"s{s}: measured/predicted uniform {cal[0]['bias']:.2f}"
                    + (f", candidates {min(others):.2f}-{max(others):.2f}" if others else "")
                )
        if same:
            notes.add(f"same widths as {', '.join(same)}")
        if any(x.get("search_s_includes_finetune") for x in r):
            notes.add("search s includes the final fine-tune (its start was not reported)")
        screened = [x["summary"] for x in r if (x.get("summary") or {}).get("screened") is not None]
        taus = [float(s["rank_agreement"]) for s in screened if s.get("rank_agreement") is not None]
        per = [
            float(s["proxy_s_per_candidate"]) for s in screened if s.get("proxy_s_per_candidate") is not None
        ]
        proxy = "-"
        if screened:
            proxy = (
                f"{np.mean([s['screened'] for s in screened]):.0f}, "
                + (f"{np.mean(per):.2f} s, " if per else "- s, ")
                + (f"τ {np.mean(taus):.2f}" if taus else "τ n/a")
            )
        totals = [x.get("total_s", x.get("search_s", 0) + x.get("finetune_s", 0)) for x in r]
        out.append(
            [
                name,
                str(len(tried)),
                f"{int(sum(q <= case.ratio))}/{len(tried)}",
                f"{ms:.4f} ({np.median(q):.3f})",
                f"{100 * q.mean() / case.ratio:.1f} %",
                "—" if method == "uniform" else _mean_interval([d for _, d in d_lat], 3),
                f"{np.mean([x['macs'] for x in r]) / dense_macs:.3f}",
                f"{np.mean([x['params'] for x in r]) / 1e6:.3f} M",
                f"{a.mean():.2f} ± {a.std(ddof=1):.2f}" if len(a) > 1 else f"{a[0]:.2f} (1 seed)",
                "—" if method == "uniform" else _mean_interval([d for _, d in d_acc]),
                "—" if method == "uniform" else ", ".join(f"s{s} {_signed(d)}" for s, d in d_acc) or "-",
                f"{np.mean([x.get('training_epochs', float('nan')) for x in r]):g}",
                f"{np.mean([x['search_s'] for x in r]):.0f}",
                f"{np.mean(totals):.0f}",
                proxy,
                "; ".join(sorted(notes)),
            ]
        )
    return markdown_table(HEADER, out)


def case_intro(
    prep: Prepared, rows: dict[tuple[str, int], dict[str, Any]], timing: dict[str, Any], marks: dict[str, str]
) -> list[str]:
    case, base = prep.case, prep.base
    refs = [r["reference_ms"] for r in rows.values() if r.get("reference_ms")]
    dense = [t["dense_ms"] for t in timing["timings"].values()]
    recorded = base.get("checkpoint_test_accuracy")
    trained = (
        f"the shared base `{Path(base['checkpoint']).name}` (sha256 {base['sha256'][:12]}…)"
        if case.base == "shared"
        else f"trained here, {base.get('epochs'):g} epochs"
        + (f" in {base['train_s'] / 60:.0f} min" if base.get("train_s") else "")
        + f", settings {base.get('train')}"
    )
    lines = [
        f"## {case.name}: {case.model} on {DATA_NAMES[case.data]}, budget {100 * case.ratio:.0f} % of "
        f"the dense latency, batch 1, grid round_to {case.round_to}, min_ratio {case.min_ratio}",
        "",
        f"- Dense base: {trained}; validation {100 * base['val_accuracy']:.2f} %, test "
        f"{100 * base['test_accuracy']:.2f} % (scored once here"
        + (f"; the checkpoint records {100 * recorded:.2f} %" if recorded is not None else "")
        + f"), at code {base['code']['id']}{marks.get(base['code']['id'], '')}.",
        f"- Final timing (code {timing['code']['id']}, {timing['date']}, {timing['repeats']} interleaved "
        f"repeats): dense {np.median(dense) if dense else float('nan'):.4f} ms (median over its rounds "
        "beside each network). Every network is judged on its ratio to the dense network timed beside "
        'it; "within budget" is that ratio ≤ the budget ratio, "budget used" the mean ratio over the '
        "budget ratio.",
    ]
    if refs:
        lines.append(
            f"- Each search timed its own dense reference when it began (the budget is the ratio times it): "
            f"{min(refs):.4f}–{max(refs):.4f} ms over {len(refs)} searches."
        )
    return [*lines, ""]


def _code_marks(tables: list[Any], current: str) -> tuple[dict[str, str], Counter[str]]:
    """A mark per code id other than the current one, over every row, base and timing shown."""
    ids: Counter[str] = Counter()
    for prep, _, rows, timing in tables:
        ids.update(r["code"]["id"] for r in rows.values())
        ids.update([prep.base["code"]["id"], timing["code"]["id"]])
    others = sorted(i for i in ids if i != current)
    marks = {i: MARKS[n % len(MARKS)] * (1 + n // len(MARKS)) for n, i in enumerate(others)}
    return {current: "", **marks}, ids


def header(
    tables: list[Any], args: Any, command: list[str], marks: dict[str, str], ids: Counter[str], current: str
) -> list[str]:
    row_versions = {tuple(sorted(r["versions"].items())) for _, _, rows, _ in tables for r in rows.values()}
    seeds_other = args.seeds[: args.seeds_other]
    batches, items = args.proxy_batches or PROXY_BATCHES, args.proxy_val or PROXY_VAL
    lines = [
        "# Accuracy at the same measured latency",
        "",
        "```",
        shlex.join(command),
        "```",
        "",
        f"- rendered {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC at code {current}; the results shown "
        f"come from code {', '.join(f'{i} ({n})' for i, n in ids.most_common())} (count of rows, bases and "
        "timings). "
        + (
            "Marked rows come from code other than the current: "
            + "; ".join(f"{m} = {i}" for i, m in marks.items() if m)
            + "."
            if len(marks) > 1
            else "All of them from the current code."
        ),
        *(
            [
                f"- {changed} row(s) began after the working tree had changed since their process started "
                "(modules imported lazily from then on may be newer than the code they are stamped with; "
                "each row's JSON has `tree_now`)"
            ]
            if (changed := sum("tree_now" in r for _, _, rows, _ in tables for r in rows.values()))
            else []
        ),
        f"- machine: {cpu_model()}, {platform.machine()}; versions now {versions(*LIBRARIES)}"
        + (
            f"; the rows ran under {len(row_versions)} different version sets (each row's JSON has its own)"
            if len(row_versions) > 1
            else ""
        ),
        f"- latency: onnxruntime CPU, 1 thread, fp32, batch 1, 3x32x32; protocol {PROTOCOL.to_dict()}; each "
        "final network timed with a round of the dense network after each of its rounds, "
        f"{args.timing_repeats} repeats over all networks of a case, ratio per round pair, median",
        f"- sizing: profile of {args.samples} sub-networks per model (LPNet); final fine-tune "
        f"{args.final_epochs:g} epochs for every method (lr 0.05, SGD, augmentation "
        + (
            "where the data suits it: CIFAR-10 yes, Fashion-MNIST no"
            if args.augment is None
            else str(args.augment)
        )
        + "); the searches' short fine-tune "
        + (
            f"{args.finetune_epochs:g} epochs"
            if args.finetune_epochs is not None
            else "0.1 epoch on CIFAR-10, 0.05 on Fashion-MNIST"
        )
        + f"; `screen`: {args.screen_trials} candidates scored by the proxy ({batches} BatchNorm "
        f"batches of 64, {items} validation items), rerank of {args.rerank} and the uniform "
        "network; "
        f"`optuna`, `flops` (and the older searches): {args.trials} trials; `gates`: {args.gate_trials} "
        f"trials, each training the network with its gates for {args.gate_epochs:g} epochs; `halp`: its "
        f"progressive prune-and-fine-tune of {args.gate_epochs:g} epochs; `tp-global`: global ratios "
        f"scanned in steps of {args.tp_step:g}; `modelopt`: {args.bisect_steps} bisection steps; seeds "
        f"{args.seeds} on vgg11_bn at 30 % and resnet20, {seeds_other} on the others; resnet56 base "
        f"{args.resnet56_epochs:g} epochs with augmentation",
        "- methods: the strategies run as `autoprune search --budget-ratio R` (each times its own dense "
        "reference); `tp-global`: Torch-Pruning's MetaPruner, global L1 magnitude, `max_pruning_ratio` = 1 − "
        "min_ratio, round_to as the grid, the widest global ratio of the scan that measures within the "
        "budget "
        "(by the margin autoprune's finalists need); `modelopt`: NVIDIA ModelOpt FastNAS "
        '(`modelopt.torch.prune.prune(mode="fastnas")`), per-layer width choices min_ratio..1 in its 0.05 '
        "steps rounded to multiples of round_to (`channel_divisor`), BatchNorm calibrated on "
        f"{batches} training batches of 64, scored on "
        + (
            f"{items if args.modelopt_val is None else args.modelopt_val} fixed validation items"
            if (args.modelopt_val is None or args.modelopt_val > 0)
            else "the whole validation split"
        )
        + " (never test), its FLOPs percentage bisected until the network measures within the budget",
        "- columns: Δ vs uniform are paired by seed (same seed, same data order); training = epochs the "
        "final network was trained in all after pruning began (gates, droppruning, halp keep the weights "
        "trained in their search); search s = wall time without the final fine-tune (autoprune search: "
        "until its final fine-tune starts; tp-global: the scan, shared by the seeds; modelopt: sensitivity "
        "map and bisection); total s adds the final fine-tune and the scoring; τ = Kendall's tau between the "
        "proxy and the rerank's fine-tuned accuracy; test top-1 is read once per final network",
        "",
    ]
    return lines


def render(tables: list[Any], args: Any, *, command: list[str], out: Path) -> None:
    current = process_code()["id"]
    marks, ids = _code_marks(tables, current)
    lines = header(tables, args, command, marks, ids, current)
    for prep, methods, rows, timing in tables:
        lines += case_intro(prep, rows, timing, marks)
        lines += [case_table(prep, methods, rows, timing, marks), ""]
    if not tables:
        lines += ["No rows yet.", ""]
    # A hand-written reading of the tables, below this marker, survives regeneration.
    if out.is_file() and READING in (old := out.read_text()):
        lines += ["", READING + old.split(READING, 1)[1].rstrip("\n")]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, "\n".join(lines) + "\n")
    print("\n".join(lines))
