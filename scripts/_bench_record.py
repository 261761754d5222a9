"""What every cached result of ``bench_tradeoff.py`` records and how it is timed: the code that produced
it (commit, dirty flag, a digest of the uncommitted changes), library versions, a key of the settings it
ran with, and latency as the ratio to the dense network timed beside it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import nn

from autoprune._console import Reporter
from autoprune.config import ProtocolConfig
from autoprune.latency import get_backend
from autoprune.latency.fingerprint import versions
from autoprune.latency.protocol import measure_referenced
from autoprune.search import margin_for

BACKEND = ("onnxruntime", {"threads": 1})
PROTOCOL = ProtocolConfig()
CODE_PATHS = ("autoprune", "scripts", "pyproject.toml")  # what a result depends on (not docs/)
LIBRARIES = (
    "torch",
    "torchvision",
    "onnxruntime",
    "optuna",
    "torch_pruning",
    "numpy",
    "scipy",
    "nvidia-modelopt",
    "torchprofile",
)


def _git(*args: str) -> bytes:
    return subprocess.run(["git", *args], capture_output=True, check=False).stdout


def code_identity() -> dict[str, Any]:
    """HEAD, whether the code paths differ from it, and a digest of how (tracked diff and untracked
    files), so two dirty trees with different changes get different ids."""
    head = _git("rev-parse", "HEAD").decode().strip() or "unknown"
    status = _git("status", "--porcelain", "--", *CODE_PATHS).decode()
    dirty = bool(status.strip())
    digest = None
    if dirty:
        h = hashlib.blake2b(_git("diff", "HEAD", "--", *CODE_PATHS), digest_size=4)
        for line in sorted(status.splitlines()):
            if line.startswith("??"):
                path = Path(line[3:].strip())
                files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
                for f in files:
                    h.update(str(f).encode() + (f.read_bytes() if f.is_file() else b""))
        digest = h.hexdigest()
    return {
        "commit": head,
        "dirty": dirty,
        "diff": digest,
        "id": head[:7] + (f"+dirty:{digest}" if dirty else ""),
    }


_PROCESS_CODE: dict[str, Any] = {}


def process_code() -> dict[str, Any]:
    """The code as this process found it when it first asked (call it at start): what it imported."""
    if not _PROCESS_CODE:
        _PROCESS_CODE.update(code_identity())
    return dict(_PROCESS_CODE)


def stamp(args: dict[str, Any]) -> dict[str, Any]:
    """Provenance recorded with every cached result: the code the process started with, and the tree's
    when it differs by now (another edit since: modules imported lazily from then on may be newer)."""
    code, now = process_code(), code_identity()
    return {
        "code": code,
        **({"tree_now": now} if now["id"] != code["id"] else {}),
        "versions": versions(*LIBRARIES),
        "args": args,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def settings_key(settings: dict[str, Any]) -> str:
    """A short key of ``settings``: a cached result is reused only under the same key."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=4).hexdigest()


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float | None]:
    """The mean and the half-width of its ``confidence`` t-interval (None with fewer than 2 values)."""
    a = np.asarray(values, dtype=float)
    if len(a) < 2:
        return float(a.mean()), None
    half = stats.t.ppf(0.5 + confidence / 2, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a))
    return float(a.mean()), float(half)


class StageClock(Reporter):
    """A silent reporter that notes when each stage of ``api.search`` starts (its progress callback is
    created) and last reports: the final fine-tune's start splits search time from fine-tune time."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def task(self, description: str) -> Callable[[int, int], None]:
        self.first.setdefault(description, time.perf_counter())

        def step(done: int, total: int) -> None:
            self.last[description] = time.perf_counter()

        return step

    def since_start(self, stage: str) -> float | None:
        """Seconds from the start to ``stage``'s start (None: it never started)."""
        return None if stage not in self.first else self.first[stage] - self.start


def time_beside_dense(
    dense: nn.Module, models: Sequence[nn.Module], *, input_shape: Sequence[int], repeats: int,
    backend: tuple[str, dict[str, Any]] = BACKEND, protocol: ProtocolConfig = PROTOCOL,
) -> list[dict[str, Any]]:  # fmt: skip
    """Each of ``models`` timed with a round of the dense network after each of its rounds (A B A B, by
    ``measure_referenced``), ``repeats`` times over all models, on ``backend`` (name, options); per model
    the median of its own latency, of the dense one's beside it, and of the per-repeat ratios, and the
    ratios' spread."""
    device = get_backend(backend[0], **backend[1])
    reference = device.session(dense.eval(), list(input_shape))
    sessions = []
    try:
        sessions = [device.session(m.eval(), list(input_shape)) for m in models]
        got: list[list[Any]] = [[] for _ in models]
        for _ in range(repeats):
            for i, s in enumerate(sessions):
                got[i].append(measure_referenced(s, reference, protocol))
    finally:
        for s in [reference, *sessions]:
            s.close()
    out = []
    for results in got:
        ratios = np.array([r.ratio for r in results])
        out.append(
            {
                "ms": float(np.median([r.stats.median_ms for r in results])),
                "dense_ms": float(np.median([r.reference_ms for r in results])),
                "ratio": float(np.median(ratios)),
                "ratio_spread": float(ratios.max() / ratios.min()),
                "noisy": any(r.stats.noisy for r in results),
            }
        )
    return out


def within_ratio(timing: dict[str, Any], budget_ratio: float) -> bool:
    """Within the budget by the margin autoprune's finalists need: the protocol's tolerance or the
    spread of this network's repeats, whichever is larger."""
    margin = margin_for(timing["ratio_spread"], tolerance=PROTOCOL.max_deviation)
    return bool(timing["ratio"] * (1 + margin) <= budget_ratio)


def load_network(row: dict[str, Any]) -> nn.Module:
    """A final network as its row saved it: an autoprune run's pruned.pt, or a whole pickled module."""
    from autoprune.prune import load_pruned

    if row["kind"] == "autoprune":
        return load_pruned(row["model_path"]).module.eval()
    return torch.load(row["model_path"], weights_only=False).eval()
