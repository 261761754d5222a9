"""Busy host: `autoprune demo` run N times on an idle machine and N times while a background load burns
every core (one process per logical CPU multiplying matrices), each in a fresh run directory, and
written up as docs/benchmarks/busy-host.md (issue 19).

    python scripts/stress_demo.py --runs 10 --work DIR

For every run: whether the demo succeeded (exit status 0), its wall time, the error line when it failed,
and how the search judged its winner (the budget, the winner's latency judged on its ratio to the dense
network beside it, the margin, the repeats, the host's slowdown and load). After each run, with the load
stopped, the winner is timed again beside the dense network on the quiet machine, and that re-timing is
set against the search's judgement and the budget. Every run is appended to DIR/runs.jsonl as it ends and
a rerun skips the runs done, so the benchmark resumes; --render-only writes the page from them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_record import process_code, stamp

from autoprune._io import write_text
from autoprune.api._demo import DEMO_MODEL, DEMO_PROTOCOL
from autoprune.latency import get_backend, time_interleaved
from autoprune.latency.fingerprint import cpu_model
from autoprune.models import load_model
from autoprune.predictor import LatencyPredictor
from autoprune.prune import load_pruned
from autoprune.search import margin_for

CONDITIONS = ("idle", "load")
BURN = "import numpy as np\na = np.random.rand(384, 384)\nwhile True:\n    a = a @ a / np.abs(a @ a).max()\n"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def start_load() -> list[subprocess.Popen[bytes]]:
    """One matrix-product loop per logical CPU, each on one thread."""
    env = {**os.environ, **ONE_THREAD}
    return [
        subprocess.Popen([sys.executable, "-c", BURN], env=env, stdout=subprocess.DEVNULL)
        for _ in range(os.cpu_count() or 1)
    ]


def stop_load(burners: list[subprocess.Popen[bytes]]) -> None:
    for b in burners:
        b.kill()
    for b in burners:
        b.wait()


def quiet_retiming(run_dir: Path, frame_ms: float) -> dict[str, float]:
    """The winner timed again beside the dense network (the demo's backend and protocol), on the machine
    as it is now, judged as the search judges: its ratio to the dense network times the budget's frame."""
    dense = load_model(DEMO_MODEL, checkpoint=run_dir / "dense.pt")[0].eval()
    pruned = load_pruned(run_dir / "pruned.pt")
    meta = LatencyPredictor.load(run_dir / "predictor.pt").meta
    backend = get_backend(meta["backend"], **meta["backend_settings"])
    (t,) = time_interleaved(
        [pruned.module.eval()], backend=backend, input_shape=pruned.input_shape, protocol=DEMO_PROTOCOL,
        reference=dense, tolerance=DEMO_PROTOCOL.max_deviation, max_seconds=60.0,
    )  # fmt: skip
    judged = t.judged(frame_ms)
    return {
        "ms": judged.median_ms,
        "spread": judged.spread,
        "margin": margin_for(judged.spread, tolerance=0.03),
    }


def one_run(args: argparse.Namespace, condition: str, index: int) -> dict[str, Any]:
    run_dir = args.work / f"{condition}-{index}"
    if run_dir.exists():  # a run cut short: start it again from nothing
        subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    cmd = [sys.executable, "-m", "autoprune", "demo", "--out", str(run_dir), *args.demo_args]
    burners = start_load() if condition == "load" else []
    load_before = os.getloadavg()[0]
    began = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - began
        load_during = os.getloadavg()[0]
    finally:
        stop_load(burners)
    record: dict[str, Any] = {
        "condition": condition, "index": index, "rc": done.returncode, "wall_s": wall,
        "load_before": load_before, "load_at_end": load_during, "command": shlex.join(cmd[1:]),
    }  # fmt: skip
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        record["error"] = lines[-1] if lines else f"exit status {done.returncode}"
        return record
    summary = json.loads((run_dir / "search.json").read_text())
    (chosen,) = [f for f in summary["finalists"] if f["chosen"]]
    m = summary.get("measurement") or {}
    record |= {
        "budget_ms": summary["budget_ms"], "judged_ms": chosen["measured_ms"], "margin": chosen["margin"],
        "repeats": chosen.get("repeats"), "raw_ms": chosen.get("raw_ms"),
        "host_slowdown": m.get("host_slowdown"),
        "search_load": m.get("load"), "frame_ms": m.get("frame_ms"), "bias": m.get("bias"),
        "last_resort": chosen.get("last_resort"), "finalists_measured": len(summary["finalists"]),
        "test_accuracy": summary["pruned"]["test_accuracy"],
    }  # fmt: skip
    if m.get("frame_ms"):
        time.sleep(args.settle_s)  # the load's processes gone, the machine settles
        record["quiet"] = quiet_retiming(run_dir, float(m["frame_ms"]))
    return record


def _median_range(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    return f"{format(float(np.median(values)), fmt)} [{format(min(values), fmt)}, {format(max(values), fmt)}]"


def render(args: argparse.Namespace, records: list[dict[str, Any]]) -> str:
    rows, notes = [], []
    for condition in CONDITIONS:
        runs = [r for r in records if r["condition"] == condition]
        if not runs:
            continue
        ok = [r for r in runs if r["rc"] == 0]
        quiet = [r for r in ok if "quiet" in r]
        agree = [r["quiet"]["ms"] / r["judged_ms"] for r in quiet]
        within = sum(r["quiet"]["ms"] <= r["budget_ms"] for r in quiet)
        walls = [r["wall_s"] for r in runs]
        rows.append(
            f"| {condition} | {len(ok)} / {len(runs)} | {_median_range(walls, '.0f')} | "
            f"{_median_range([r['host_slowdown'] for r in ok if r.get('host_slowdown')], '.2f')} | "
            f"{_median_range([r['search_load'] for r in ok if r.get('search_load') is not None], '.1f')} | "
            f"{_median_range([100 * r['margin'] for r in ok], '.1f')} | "
            f"{_median_range([r['repeats'] for r in ok if r.get('repeats')], '.0f')} | "
            f"{_median_range(agree, '.3f')} | {within} / {len(quiet)} | "
            f"{sum(bool(r.get('last_resort')) for r in ok)} |"
        )
        notes += [f"- {condition} run {r['index']} failed: `{r.get('error')}`" for r in runs if r["rc"] != 0]
    per_run = [
        f"| {r['condition']} | {r['index']} | {r['rc']} | {r['wall_s']:.0f} | "
        + (
            f"{r['budget_ms']:.4f} | {r['judged_ms']:.4f} | {r['raw_ms']:.4f} | {100 * r['margin']:.1f} % | "
            f"{r['repeats']} | {r['host_slowdown']:.2f} | "
            + (f"{r['quiet']['ms']:.4f} |" if "quiet" in r else "- |")
            if r["rc"] == 0
            else "- | - | - | - | - | - | - |"
        )
        for r in records
    ]
    first = records[0]
    code = first["stamp"]["code"]["id"]
    codes = sorted({r["stamp"]["code"]["id"] for r in records})
    dates = first["stamp"]["date"] + (f" to {records[-1]['stamp']['date']}" if len(records) > 1 else "")
    head = [
        "# Busy host: the demo idle and under a full CPU load",
        "",
        f"Command: `python scripts/stress_demo.py {' '.join(args.argv)}` (each run: `{first['command']}`).",
        f"Code: {', '.join(codes)}. Machine: {cpu_model()}, {os.cpu_count()} logical CPUs, "
        f"{platform.system()} {platform.release()}, no GPU. Date: {dates}.",
        "",
        EXPLAINED,
        "",
        SUMMARY_HEADER,
    ]
    tail = ["", "## Every run", "", RUNS_HEADER, *per_run, ""]
    if len(codes) > 1:
        tail.append(f"Rows from code other than {code} are from older code.")
    lines = [*head, *rows, "", *(notes or ["No run failed."]), *tail]
    return "\n".join(lines).rstrip() + "\n"


EXPLAINED = " ".join(
    [
        "Each run is `autoprune demo` in a fresh directory: every step (train, profile the sub-networks,",
        "fit, search, fine-tune, export), not only the search. *load*: one process per logical CPU",
        "multiplying 384x384 matrices on one thread, for the whole run. The search judges each finalist on",
        "the median of its ratio to the dense network timed round for round beside it, times the dense",
        "latency the budget refers to: *judged* is that latency, *raw* the finalist's absolute median as",
        "timed. *Quiet re-timing*: after each run, with the load stopped, the winner timed again beside the",
        "dense network and judged the same way; *quiet / judged* near 1 says the judgement under load is",
        "what a quiet machine measures. *Host slowdown*: the dense network beside the finalists over the",
        "budget's dense latency. *Load average*: the host's 1-minute load while the finalists were timed.",
    ]
)
SUMMARY_HEADER = (
    "| condition | succeeded | wall s, median [min, max] | host slowdown | load average | margin % "
    "| repeats | quiet / judged | quiet within budget | last resort |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)
RUNS_HEADER = (
    "| condition | run | exit | wall s | budget ms | judged ms | raw ms | margin | repeats | host slowdown "
    "| quiet re-timing ms |\n|---|---|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=10, help="runs per condition")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=list(CONDITIONS))
    p.add_argument("--settle-s", type=float, default=5.0, help="pause after a loaded run before re-timing")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks/busy-host.md"))
    p.add_argument("--render-only", action="store_true")
    p.add_argument("demo_args", nargs="*", help="passed to `autoprune demo` after --, e.g. -- --samples 50")
    args = p.parse_args()
    args.argv = sys.argv[1:]
    process_code()
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / "runs.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    if not args.render_only:
        for condition in args.conditions:
            for i in range(args.runs):
                if any(r["condition"] == condition and r["index"] == i for r in records):
                    continue
                record = one_run(args, condition, i) | {"stamp": stamp({"demo_args": args.demo_args})}
                print(json.dumps({k: record[k] for k in ("condition", "index", "rc", "wall_s")}), flush=True)
                with log.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                records.append(record)
    if records:
        write_text(args.out, render(args, records))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
