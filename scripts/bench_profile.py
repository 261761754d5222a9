"""Profiling cost and repeatability: profile the same 5 sub-networks 10 times per backend.

    python scripts/bench_profile.py [--model resnet20] [--repeats 10] [--networks 5]
                                    [--backends onnxruntime torch] [--out docs/benchmarks/profiling.md]

For each backend available on this machine it runs ``autoprune.latency.profile_model`` ``--repeats``
times, each into a fresh profile of the same ``--networks`` sub-networks (the dense, the narrowest and
random Sobol networks), with the default protocol. It reports the wall-clock seconds per sub-network
(pruning, export, session creation and the protocol) and, per network, how far each repeat's latency is
from that network's median over the repeats: the median and the worst relative difference.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from autoprune.config import ProtocolConfig, SamplingConfig
from autoprune.errors import ConfigError
from autoprune.latency import get_backend, profile_model
from autoprune.latency.fingerprint import cpu_model, versions
from autoprune.models import create_model

CANDIDATES = {
    "onnxruntime": {},
    "torch": {},
    "torch-cuda": {"device": "cuda"},
    "onnxruntime-cuda": {"device": "cuda"},
    "tensorrt": {},
}


def _available(names: list[str]) -> dict[str, tuple[str, dict[str, object]]]:
    found = {}
    for label in names:
        backend = label.split("-")[0]
        try:
            get_backend(backend, **CANDIDATES.get(label, {}))
        except ConfigError as exc:
            print(f"skip {label}: {exc}", file=sys.stderr)
            continue
        found[label] = (backend, CANDIDATES.get(label, {}))
    return found


def bench(label: str, backend_name: str, options: dict[str, object], args: argparse.Namespace) -> dict:
    model = create_model(args.model).eval()
    shape = (1, 3, args.size, args.size)
    sampling = SamplingConfig(samples=args.networks, boundary=False, seed=args.seed)
    latencies, ratios, noisy, remeasured, seconds = [], [], 0, 0, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            started = time.perf_counter()
            prof = profile_model(
                model,
                model_spec=args.model,
                num_classes=10,
                input_shape=shape,
                backend=get_backend(backend_name, **options),
                sampling=sampling,
                protocol=ProtocolConfig(),
                out=Path(tmp) / f"repeat{r}.parquet",
            )
            seconds += time.perf_counter() - started
            latencies.append(prof.latency_ms(raw=True))
            ratios.append(prof.rows["ratio"].to_numpy(dtype=float))
            noisy += int(prof.rows["noisy"].sum())
            remeasured += int(prof.rows["remeasured"].sum())
            print(f"{label} repeat {r + 1}/{args.repeats}: {np.round(prof.latency_ms(), 4)}", file=sys.stderr)
    lat = np.array(latencies)  # repeats x networks
    rel = np.abs(lat / np.median(lat, axis=0) - 1.0)
    ratio = np.array(ratios)[:, 1:]  # the dense network's ratio to itself is 1 by construction
    rel_ratio = np.abs(ratio / np.nanmedian(ratio, axis=0) - 1.0)
    return {
        "ratio_median_rel": float(np.nanmedian(rel_ratio)),
        "ratio_worst_rel": float(np.nanmax(rel_ratio)),
        "label": label,
        "sec_per_net": seconds / lat.size,
        "median_rel": float(np.median(rel)),
        "worst_rel": float(rel.max()),
        "per_net_range": float(np.max(lat.max(axis=0) / lat.min(axis=0) - 1.0)),
        "dense_ms": float(np.median(lat[:, 0])),
        "narrow_ms": float(np.median(lat[:, 1])),
        "noisy": noisy,
        "remeasured": remeasured,
        "n": lat.size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--networks", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backends", nargs="+", default=list(CANDIDATES))
    parser.add_argument("--out", default="docs/benchmarks/profiling.md")
    args = parser.parse_args()

    results = [bench(label, b, o, args) for label, (b, o) in _available(args.backends).items()]
    git = ["git", "rev-parse", "--short", "HEAD"]
    commit = subprocess.run(git, capture_output=True, text=True).stdout.strip()
    lines = [
        "# Profiling: cost per sub-network and repeatability",
        "",
        "```",
        "python " + " ".join(sys.argv),
        "```",
        "",
        f"- commit {commit or 'unknown'}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {cpu_model()}, {platform.machine()}, logical cores visible: "
        f"{len(__import__('os').sched_getaffinity(0))}; versions {versions('torch', 'onnxruntime')}",
        f"- model {args.model} at 1x3x{args.size}x{args.size}, {args.networks} networks (dense, narrowest, "
        f"{args.networks - 2} Sobol) profiled {args.repeats} times each into fresh profiles; "
        f"protocol {ProtocolConfig().to_dict()}",
        "",
        "| backend | s / sub-network | dense ms | narrowest ms | median rel. diff. | worst rel. diff. "
        "| worst max/min - 1 | ratio: median rel. diff. | ratio: worst rel. diff. | re-measured rounds "
        "| flagged noisy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['label']} | {r['sec_per_net']:.3f} | {r['dense_ms']:.4f} | {r['narrow_ms']:.4f} "
            f"| {100 * r['median_rel']:.2f} % | {100 * r['worst_rel']:.2f} % "
            f"| {100 * r['per_net_range']:.2f} % "
            f"| {100 * r['ratio_median_rel']:.2f} % | {100 * r['ratio_worst_rel']:.2f} % "
            f"| {r['remeasured']} | {r['noisy']} / {r['n']} |"
        )
    lines += [
        "",
        "Relative difference: |latency of a network in one repeat / its median over the repeats - 1|, over "
        "all networks and repeats, of the raw latency. Worst max/min - 1: the largest ratio between two "
        "repeats of one network. Ratio: the same for the network's latency relative to the dense "
        "reference timed beside it (every second network; those between are relative to the mean of the "
        "reference timings before and after), the drift-corrected quantity a profile's `latency_ms` and "
        "a search's conversion rest on; the dense network itself is left out of it (its ratio is 1).",
        "",
        "What limits it: the machine is shared and virtualised, so another process can slow a stretch of "
        "time down. A slowdown of the whole host moves the reference's rounds with the network's, and the "
        "ratio cancels it; the protocol re-measures rounds whose ratio disagrees and flags what stays "
        "noisy, but a disturbance that hits a network's rounds and not the reference's beside them still "
        "shows (the worst case above: a network flagged noisy). Backends this machine lacks (CUDA, "
        "TensorRT) are skipped, with the reason printed.",
        "",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
