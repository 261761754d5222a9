"""The profile's floor (issue 19, item 5): how closely a second measurement of a profile's networks agrees
with the profile, and which protocol brings it within 3 %.

    python scripts/bench_remeasure.py [PROFILE.parquet ...] --work DIR [--sessions 2]
                                      [--variants profiled rounds9] [--out docs/benchmarks/remeasure.md]

For each profile (default: the shipped mobilenet_v2 and vgg11_bn, whose re-measure MAPE in
``docs/benchmarks/predictor.md`` is over 5 %), the held-out networks of ``autoprune fit``'s split (the
20 % that ``bench_predictor.py --remeasure`` measures) are profiled again on this machine ``--sessions``
times under each protocol variant, each session a fresh profile with its own dense reference beside them
(``bench_predictor.remeasure``):

- ``profiled``: the profile's own protocol (3 rounds, the reference beside every 2nd network);
- ``rounds9``: three times the rounds per network;
- ``ref1``: the reference beside every network.

Per variant the table gives each session's drift-corrected latencies against the profile (in the
profile's unit, as a search converts them) and raw, the mean of the sessions against the profile, and
the sessions against each other (the second against the first: the floor of this host under that
protocol, whatever the profile holds). Every session is cached in ``--work`` as JSON; a rerun measures
only what is missing, so sessions can be taken hours apart.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from _bench_record import code_identity
from bench_predictor import remeasure

from autoprune._io import atomic_write, write_json
from autoprune.config import FitConfig, ProtocolConfig
from autoprune.latency import Profile, read_profile
from autoprune.latency.fingerprint import cpu_model, versions
from autoprune.latency.hygiene import load_average
from autoprune.predictor import latency_metrics, split_rows
from autoprune.report import markdown_table

DEFAULT_PROFILES = [
    Path("latency_profiles/amd-epyc/mobilenet_v2__onnxruntime__fp32__bs1__32x32.parquet"),
    Path("latency_profiles/amd-epyc/vgg11_bn__onnxruntime__fp32__bs1__32x32.parquet"),
]
VARIANTS = {
    "profiled": {},
    "rounds9": {"rounds": 9},
    "ref1": {"reference_every": 1},
}
HEADER = ["variant", "session", "measured (code, date)", "s / network", "load", "dense now / profiled",
          "MAPE % vs profile", "±5 %", "raw MAPE %", "raw ±5 %", "τ"]  # fmt: skip
LIMITS = """## How to read it

"2nd vs 1st" is the floor of this host under that protocol: no profile, however measured, can be closer
to a new measurement than the next measurement is. "dense now / profiled" is the dense network's latency
in a session (the median of its timings beside the networks) over the profile's reference: a host that
runs the same network at another speed than when it was profiled (another physical machine under the
same CPU name, or one shared with other tenants) moves every raw latency; the drift correction removes
a uniform change but not one that treats networks of different shapes differently."""


def held_out(prof: Profile) -> np.ndarray:
    """The rows ``autoprune fit`` (and ``bench_predictor.py``) holds out of the clean profile."""
    cfg = FitConfig()
    return split_rows(len(prof.rows), cfg.holdout, cfg.seed)[1]


def session(prof: Profile, rows: np.ndarray, variant: str, index: int, work: Path) -> dict[str, Any] | None:
    """One re-measurement of ``rows`` under ``variant``, cached (None: not this profile's device)."""
    key = hashlib.sha256(f"{prof.path.resolve()}:{list(map(int, rows))}".encode()).hexdigest()[:12]
    cache = work / f"{prof.path.stem}-{key}-{variant}-s{index}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    protocol = replace(ProtocolConfig.from_dict(prof.meta["protocol"]), **VARIANTS[variant])
    load = load_average()
    again = remeasure(prof, rows, protocol=protocol)
    if again is None:
        return None
    out = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in again.items()}
    out.update(variant=variant, session=index, protocol=protocol.to_dict(), load_start=load,
               load_end=load_average(), date=f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
               code=code_identity()["id"])  # fmt: skip
    work.mkdir(parents=True, exist_ok=True)
    write_json(cache, out)
    return out


def _load(s: dict[str, Any]) -> str:
    return "-" if s["load_start"] is None else f"{s['load_start']:.2f}-{s['load_end']:.2f}"


def _row(
    variant: str,
    label: str,
    seconds: str,
    load: str,
    vs: dict,
    raw: dict | None,
    host: str = "-",
    when: str = "-",
) -> list[str]:
    return [variant, label, when, seconds, load, host, f"{vs['mape']:.2f}", f"{vs['within_5']:.1f}",
            "-" if raw is None else f"{raw['mape']:.2f}", "-" if raw is None else f"{raw['within_5']:.1f}",
            f"{vs['kendall_tau']:.3f}"]  # fmt: skip


def table(prof: Profile, rows: np.ndarray, args: argparse.Namespace) -> list[list[str]] | None:
    measured, raw = prof.latency_ms()[rows], prof.latency_ms(raw=True)[rows]
    out: list[list[str]] = []
    for variant in args.variants:
        sessions = [session(prof, rows, variant, i, args.work) for i in range(1, args.sessions + 1)]
        if any(s is None for s in sessions):
            return None
        for s in sessions:
            assert s is not None
            host = float(np.median(s["reference_ms"])) / float(prof.reference_ms() or np.nan)
            out.append(_row(variant, f"{s['session']}", f"{s['seconds']:.2f}", _load(s),
                            latency_metrics(np.asarray(s["corrected"]), measured),
                            latency_metrics(np.asarray(s["raw_ms"]), raw), f"{host:.2f}",
                            f"{s['code']}, {s['date']}"))  # fmt: skip
        if len(sessions) > 1:
            corrected = [np.asarray(s["corrected"]) for s in sessions if s is not None]
            raws = [np.asarray(s["raw_ms"]) for s in sessions if s is not None]
            mean = latency_metrics(np.mean(corrected, 0), measured)
            out.append(
                _row(variant, "mean of sessions", "-", "-", mean, latency_metrics(np.mean(raws, 0), raw))
            )
            out.append(_row(variant, "2nd vs 1st", "-", "-", latency_metrics(corrected[1], corrected[0]),
                            latency_metrics(raws[1], raws[0])))  # fmt: skip
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("profiles", nargs="*", type=Path, default=DEFAULT_PROFILES)
    p.add_argument("--work", type=Path, required=True, help="cache of every session's measurements")
    p.add_argument("--sessions", type=int, default=2, help="re-measurements per variant (>= 1)")
    p.add_argument("--variants", nargs="+", default=["profiled", "rounds9"], choices=list(VARIANTS))
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks/remeasure.md"))
    args = p.parse_args()
    if args.sessions < 1:
        p.error("--sessions must be >= 1")
    lines = [
        "# The profile's floor: a second measurement against the profile",
        "",
        "```",
        "python " + " ".join(sys.argv),
        "```",
        "",
        f"- rendered {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC at code {code_identity()['id']}",
        f"- machine: {cpu_model()}, {platform.machine()}, logical cores visible: "
        f"{len(os.sched_getaffinity(0))}; versions {versions('torch', 'onnxruntime')}",
        "- rows: the held-out 20 % of `autoprune fit`'s split of the clean rows (those `bench_predictor.py "
        "--remeasure` measures); load: the 1-minute load average at a session's start and end",
        "- MAPE vs profile: a session's drift-corrected latencies (relative to its own dense reference, in "
        "the profile's unit) against the profile's; raw: raw latencies against the profile's raw ones; "
        "2nd vs 1st: the second session against the first (the host's floor under that protocol)",
        "",
    ]
    for path in args.profiles:
        prof = read_profile(path).without_noisy()
        rows = held_out(prof)
        body = table(prof, rows, args)
        if body is None:
            lines += [f"## {prof.meta['model']}", "", "not re-measured: this is not the profile's device", ""]
            continue
        lines += [
            f"## {prof.meta['model']} (`{path}`, {len(rows)} networks)",
            "",
            markdown_table(HEADER, body),
            "",
        ]
    lines += [LIMITS, ""]
    atomic_write(args.out, lambda tmp: tmp.write_text("\n".join(lines)))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
