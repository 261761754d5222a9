"""How well the adaptive-BatchNorm proxy (``autoprune.prune.AdaptiveBNProxy``) ranks pruned networks, and
how many calibration batches K it needs (issue 18, item 1).

    python scripts/bench_proxy.py --model vgg11_bn --checkpoint BASE.pt --data imagefolder:DIR

Random candidates near two budgets: a uniform keep ratio r per candidate (alternating over ``--ratios``),
each group's share scaled by exp(U(-spread, spread)), then a common scale bisected so the conv MACs stay
within the uniform-r network's on the width grid; they differ in allocation at about the same cost. Each
is pruned by autoprune's own path (L1 scores of the dense network, ``prune_model``) and scored by the
proxy for every K and validation-subset size V, by its plain pruned accuracy (no recalibration:
Distiller's baseline), and by the "truth": the search's trial, validation accuracy after its short
fine-tune, with the same seed and data order for every candidate. Rank agreement with the truth
(scipy's Spearman and Kendall, bootstrap intervals over candidates) chooses K and V.

Every result is one JSON line in ``--work/<run>/rows.jsonl``: rerun the same command to resume (more
candidates, Ks or Vs extend it). The markdown (every run in ``--work``, one section each) is rewritten
from the cache after each run; ``--report-only`` rewrites it without computing. One torch thread.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import Tensor, nn

from autoprune import training
from autoprune._io import write_json, write_text
from autoprune.data import DatasetSplits, load_dataset
from autoprune.errors import AutopruneError, ConfigError
from autoprune.graph import ChannelGraph, Widths, count_macs_params
from autoprune.latency.fingerprint import cpu_model, versions
from autoprune.models import load_model, read_checkpoint
from autoprune.predictor import Features, layers_of
from autoprune.prune import AdaptiveBNProxy, ProxyScore, prune_model, recalibrate_bn
from autoprune.report import markdown_table
from autoprune.search import WidthSpace, channel_scores

REPO = Path(__file__).resolve().parents[1]
# What defines a run's candidates and truth: a rerun with other values needs another --work.
FIXED = (
    "model", "checkpoint", "data", "ratios", "spread", "round_to", "min_ratio", "finetune_epochs", "lr",
    "seed", "criterion", "calibration_batches",
)  # fmt: skip
Row = dict[str, Any]


# -- candidates ----------------------------------------------------------------------------------------
def candidate_widths(
    space: WidthSpace, macs: Callable[[Widths], float], *, ratio: float, spread: float, seed: int, index: int
) -> Widths:
    """Candidate ``index``: group g keeps ``s * ratio * exp(u_g)`` of its channels, u_g ~ U(-spread,
    spread) from the candidate's own seeded stream (a longer run draws the same first candidates), with
    the largest s whose conv MACs stay within the uniform-ratio network's."""
    rng = np.random.default_rng([seed, index])
    shape = {g.name: ratio * float(np.exp(rng.uniform(-spread, spread))) for g in space.groups}
    target = macs(space.uniform(ratio))

    def at(scale: float) -> Widths:
        return space.snap({g.name: scale * shape[g.name] * g.channels for g in space.groups})

    lo, hi = 0.0, 1.0 / min(shape.values())
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if macs(at(mid)) <= target else (lo, mid)
    return at(lo)


# -- measurements --------------------------------------------------------------------------------------
@torch.no_grad()
def plain_score(module: nn.Module, val: list[tuple[Tensor, Tensor]]) -> ProxyScore:
    """The proxy's scoring without its recalibration: the pruned network's raw accuracy (and loss)."""
    module.eval()
    correct, loss, seen = 0, 0.0, 0
    for x, y in val:
        logits = module(x)
        correct += int((logits.argmax(1) == y).sum())
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        seen += len(y)
    return ProxyScore(correct / seen, loss / seen)


def finetune_kwargs(ds: DatasetSplits) -> dict[str, Any]:
    """``augment=`` where ``training.train`` takes it: on where the data suits crop + flip."""
    if "augment" not in inspect.signature(training.train).parameters:
        return {}
    return {"augment": bool(getattr(ds, "augment_fits", False))}


def truth(
    args: argparse.Namespace, ds: DatasetSplits, module: nn.Module, batches: list[Any], seed: int
) -> Row:
    """The search's trial: recalibrate BatchNorm on its calibration batches, fine-tune, score on val."""
    recalibrate_bn(module, batches)
    extra = finetune_kwargs(ds)
    start = time.perf_counter()
    training.train(module, ds.train, epochs=args.finetune_epochs, lr=args.lr, seed=seed, **extra)
    mid = time.perf_counter()
    acc = training.evaluate(module, ds.val)
    end = time.perf_counter()
    return {"val_accuracy": acc, "seed": seed, "finetune_s": mid - start, "eval_s": end - mid, **extra}


class Cache:
    """JSON lines, one per measured part of a candidate; a torn last line (a killed run) is dropped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[Row] = []
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    self.rows.append(json.loads(line))
                except json.JSONDecodeError:
                    print(f"dropped a torn line of {path}", file=sys.stderr)

    def has(self, **key: Any) -> bool:
        return any(all(r.get(k) == v for k, v in key.items()) for r in self.rows)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


def git(*cmd: str) -> str:
    return subprocess.run(["git", *cmd], capture_output=True, text=True, cwd=REPO).stdout


def start_meta(args: argparse.Namespace, ds: DatasetSplits, net: nn.Module, dense_macs: int) -> Row:
    """Where and with what the run started: command, commit (and the uncommitted files it ran with)."""
    dirty = git("status", "--porcelain", "--", "autoprune", "scripts/bench_proxy.py").splitlines()
    return {
        "settings": {k: getattr(args, k) for k in FIXED},
        "command": shlex.join(["python", *sys.argv]),
        "commit": git("rev-parse", "--short", "HEAD").strip(),
        "uncommitted": [line[3:] for line in dirty],
        "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "machine": f"{cpu_model()} ({platform.machine()}), {os.cpu_count()} cores, shared",
        "load_average": os.getloadavg()[0],
        "threads": torch.get_num_threads(),
        "versions": versions("torch", "torch_pruning", "scipy", "numpy"),
        "dense_val_accuracy": training.evaluate(net, ds.val),
        "dense_macs": dense_macs,
        "val_items": len(ds.val),  # type: ignore[arg-type]
        "train_items": len(ds.train),  # type: ignore[arg-type]
    }


def run(args: argparse.Namespace, run_dir: Path) -> None:
    """Measure every missing part of every candidate, caching each as it completes."""
    meta_path = run_dir / "meta.json"
    if meta_path.is_file():
        old, new = json.loads(meta_path.read_text())["settings"], {k: getattr(args, k) for k in FIXED}
        if old != new:
            diff = {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}
            raise ConfigError(f"{run_dir} holds a run with other settings {diff}: pass another --work")
    ds = load_dataset(args.data)
    net, classes = load_model(args.model, checkpoint=args.checkpoint, num_classes=ds.num_classes)
    example = torch.zeros(1, *ds.input_shape)
    groups = ChannelGraph(copy.deepcopy(net), example).groups
    space = WidthSpace(tuple(groups), min_ratio=args.min_ratio, round_to=args.round_to)
    features = Features(groups, layers_of(net, [1, *ds.input_shape], groups))
    dense_macs, _ = count_macs_params(net, example)
    if not meta_path.is_file():
        write_json(meta_path, start_meta(args, ds, net, dense_macs))
    meta, command = json.loads(meta_path.read_text()), shlex.join(["python", *sys.argv])
    if meta["command"] != command:  # a resumed run (more candidates, say): the last command is the one shown
        meta["earlier_commands"] = [*meta.get("earlier_commands", []), meta["command"]]
        write_json(meta_path, {**meta, "command": command})
    cache = Cache(run_dir / "rows.jsonl")
    commit = git("rev-parse", "--short", "HEAD").strip()
    scores = channel_scores(net, example, args.criterion)
    truth_batches = training.calibration_batches(ds.train, count=args.calibration_batches, seed=args.seed)
    proxies: dict[tuple[int, int], AdaptiveBNProxy] = {}

    def proxy(k: int, v: int) -> AdaptiveBNProxy:
        if (k, v) not in proxies:  # drawn once: the same batches and subset for every candidate
            proxies[k, v] = AdaptiveBNProxy(ds.train, ds.val, batches=k, val_size=v, seed=args.seed)
        return proxies[k, v]

    n_val = len(ds.val)  # type: ignore[arg-type]
    vals = list(dict.fromkeys(n_val if v == "all" else min(int(v), n_val) for v in args.val_sizes))
    settings = [(k, v) for v in vals for k in args.ks if v == vals[0] or k in args.big_val_ks]
    for i in range(args.candidates):
        ratio = args.ratios[i % len(args.ratios)]
        widths = candidate_widths(
            space, lambda w: float(features.macs([w])[0]), ratio=ratio, spread=args.spread, seed=args.seed,
            index=i,
        )  # fmt: skip
        todo_proxy = [(k, v) for k, v in settings if not cache.has(candidate=i, part="proxy", K=k, V=v)]
        todo_plain = [v for v in vals if not cache.has(candidate=i, part="plain", V=v)]
        todo_truth = [
            (part, seed)
            for part, seed, wanted in (
                ("truth", args.seed, True),
                ("repeat", args.seed + 1, i < args.repeats),
            )
            if wanted and not cache.has(candidate=i, part=part)
        ]
        if not (todo_proxy or todo_plain or todo_truth or not cache.has(candidate=i, part="net")):
            continue
        print(f"candidate {i} (ratio {ratio}) ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        p = prune_model(
            net, widths=widths, model_spec=args.model, num_classes=classes, input_shape=[1, *ds.input_shape],
            criterion=args.criterion, scores=scores,
        )  # fmt: skip
        prune_s = time.perf_counter() - start
        module, fresh = p.module, copy.deepcopy(p.module)  # fresh: BatchNorm statistics as pruned
        base = {"candidate": i, "commit": commit, "prune_s": prune_s}
        if not cache.has(candidate=i, part="net"):
            m, params = count_macs_params(module, example)
            cache.add(
                {**base, "part": "net", "ratio": ratio, "widths": p.widths, "macs": m, "params": params}
            )
        for v in todo_plain:  # before any recalibration
            t = time.perf_counter()
            s = plain_score(module, proxy(args.ks[0], v).val)
            cache.add({**base, "part": "plain", "V": v, **_score(s), "score_s": time.perf_counter() - t})
        for k, v in todo_proxy:  # recalibration resets every statistic, so one pruned copy serves all
            pr = proxy(k, v)
            t = time.perf_counter()
            s = pr.score(module)
            cache.add(
                {**base, "part": "proxy", "K": k, "V": v, **_score(s), "score_s": time.perf_counter() - t}
            )
        for part, seed in todo_truth:
            cache.add({**base, "part": part, **truth(args, ds, copy.deepcopy(fresh), truth_batches, seed)})


def _score(s: ProxyScore) -> Row:
    return {"accuracy": s.accuracy, "loss": s.loss, "value": s.value}


# Two rankings of one score, computed here from the cached accuracy and loss (ProxyScore.value itself
# changed from the first to the second after the vgg11_bn run).
ACC, LOSS = ", by accuracy", ", by loss"
RANKINGS: dict[str, Callable[[Row], float]] = {
    ACC: lambda r: r["accuracy"] - 1e-4 * min(r["loss"], 9.0),  # accuracy, the loss breaking ties
    LOSS: lambda r: -r["loss"],
}


# -- statistics ----------------------------------------------------------------------------------------
def rank_stats(x: np.ndarray, y: np.ndarray, strata: np.ndarray) -> np.ndarray:
    """Spearman and Kendall over all candidates, and Kendall within budget: tau-b inside each ratio
    group, averaged weighted by its pairs (the search ranks networks of one budget)."""
    warnings.simplefilter("ignore", stats.ConstantInputWarning)  # a resample of ties: nan, skipped
    within, weight = 0.0, 0
    for s in np.unique(strata):
        m = strata == s
        pairs = int(m.sum()) * (int(m.sum()) - 1) // 2
        t = stats.kendalltau(x[m], y[m]).statistic if pairs > 1 else np.nan
        if np.isfinite(t):
            within, weight = within + t * pairs, weight + pairs
    return np.array([
        stats.spearmanr(x, y).statistic, stats.kendalltau(x, y).statistic,
        within / weight if weight else np.nan,
    ])  # fmt: skip


def bootstrap(
    columns: Mapping[str, np.ndarray], y: np.ndarray, strata: np.ndarray, *, draws: int
) -> dict[str, np.ndarray]:
    """(draws, 3) statistics per column on the same resamples: paired, so columns can be compared.
    Candidates are resampled within their ratio group."""
    rng = np.random.default_rng(0)
    groups = [np.flatnonzero(strata == s) for s in np.unique(strata)]
    out = {name: np.empty((draws, 3)) for name in columns}
    for d in range(draws):
        idx = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups])
        for name, x in columns.items():
            out[name][d] = rank_stats(x[idx], y[idx], strata[idx])
    return out


def interval(point: float, draws: np.ndarray) -> str:
    lo, hi = np.nanpercentile(draws, [2.5, 97.5])
    return f"{point:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def recommend(
    point: Mapping[str, np.ndarray], boot: Mapping[str, np.ndarray], proxies: list[str], baseline: str | None
) -> tuple[str | None, str]:
    """The best within-budget Kendall, then the cheapest setting of the same ranking (smallest V, then
    smallest K) within the noise of it: their paired bootstrap difference's 95 % interval reaches zero.
    Also says whether the other ranking and the no-recalibration baseline are worse beyond the noise."""
    ranked = [n for n in proxies if np.isfinite(point[n][2])]
    if not ranked:
        return None, "No recommendation: no proxy setting has a within-budget Kendall (every score tied)."
    best = max(ranked, key=lambda n: point[n][2])

    def diff(n: str, to: str = best) -> str:
        lo, hi = np.nanpercentile(boot[n][:, 2] - boot[to][:, 2], [2.5, 97.5])
        return f"{point[n][2] - point[to][2]:+.2f} [{lo:+.2f}, {hi:+.2f}]"

    def close(n: str) -> bool:
        return bool(np.nanpercentile(boot[n][:, 2] - boot[best][:, 2], 97.5) >= 0)

    by_loss = best.endswith(LOSS)
    same = [n for n in ranked if n.endswith(LOSS) == by_loss]
    pick = next(n for n in same if close(n))
    worse = [n for n in ranked if not close(n)]
    lo, hi = np.nanpercentile(boot[pick][:, 2], [2.5, 97.5])
    text = [
        f"**Recommendation: {pick}.** The best within-budget Kendall is {best}'s ({point[best][2]:+.2f}); "
        f"{pick} is the cheapest setting ranked the same way (smallest V, then smallest K) whose paired "
        f"bootstrap difference to it, {diff(pick)}, reaches zero. Within the noise of the best: "
        f"{', '.join(n for n in ranked if close(n))}; worse: {', '.join(worse) or 'none'}.",
        f"{pick}'s own within-budget interval [{lo:+.2f}, {hi:+.2f}] "
        + ("excludes zero." if lo > 0 else "includes zero: it does not rank networks of one budget better "
           "than chance at this sample size."),
    ]  # fmt: skip
    other = [n for n in ranked if n.endswith(LOSS) != by_loss]
    if other:
        o = max(other, key=lambda n: point[n][2])
        text.append(
            f"The best setting ranked {'by accuracy' if by_loss else 'by loss'}, {o}, against the best: "
            f"{diff(o)}."
        )
    plain = None if baseline is None else baseline + (LOSS if by_loss else ACC)  # ranked the same way
    if plain is not None and np.isfinite(point[plain][2]):
        text.append(f"{pick} against {plain} (the plain pruned network): {diff(pick, plain)}.")
    return pick, " ".join(text)


# -- report --------------------------------------------------------------------------------------------
def section(run_dir: Path, draws: int) -> tuple[str, list[str] | None]:
    """The run's markdown, and its line of the summary table (None before it has a recommendation)."""
    meta = json.loads((run_dir / "meta.json").read_text())
    st = meta["settings"]
    rows = Cache(run_dir / "rows.jsonl").rows
    by = {part: {r["candidate"]: r for r in rows if r["part"] == part} for part in ("net", "truth", "repeat")}
    nets, truths = by["net"], by["truth"]
    ids = sorted(set(truths) & set(nets))
    kind, _, where = st["data"].partition(":")
    title = f"## {st['model']}, {kind}" + (f" ({Path(where).name})" if where else "")
    if len(ids) < 4:
        return f"{title}\n\n{len(ids)} candidates finished so far: no table yet.\n", None
    cols: dict[str, dict[int, Row]] = {}
    for r in sorted(rows, key=lambda r: (r["part"] != "plain", r.get("V", 0), r.get("K", 0))):
        if r["part"] in ("plain", "proxy"):
            v = "all" if r["V"] == meta["val_items"] else r["V"]
            name = f"no recalibration, V={v}" if r["part"] == "plain" else f"K={r['K']}, V={v}"
            cols.setdefault(name, {})[r["candidate"]] = r
    cols = {n: c for n, c in cols.items() if all(i in c for i in ids)}
    y = np.array([truths[i]["val_accuracy"] for i in ids])
    strata = np.array([nets[i]["ratio"] for i in ids])
    scores: dict[str, np.ndarray] = {}
    for suffix, rank in RANKINGS.items():
        scores |= {n + suffix: np.array([rank(c[i]) for i in ids]) for n, c in cols.items()}
    point = {n: rank_stats(x, y, strata) for n, x in scores.items()}
    boot = bootstrap(scores, y, strata, draws=draws)
    table = []
    for n in scores:
        c = cols[n.removesuffix(LOSS).removesuffix(ACC)]
        secs = np.array([c[i]["score_s"] + c[i]["prune_s"] for i in ids])
        mean = (
            f"loss {np.mean([c[i]['loss'] for i in ids]):.2f}"
            if n.endswith(LOSS)
            else f"top-1 {100 * np.mean([c[i]['accuracy'] for i in ids]):.1f} %"
        )
        table.append([
            n, *[interval(point[n][j], boot[n][:, j]) for j in range(3)], mean,
            f"{np.median(secs):.2f} ({secs.min():.2f}-{secs.max():.2f})",
        ])  # fmt: skip
    share = np.array([nets[i]["macs"] / meta["dense_macs"] for i in ids])
    groups = []
    for r in sorted(set(strata)):
        m = strata == r
        groups.append([
            f"{r:.2f}", str(int(m.sum())), f"{100 * share[m].min():.1f}-{100 * share[m].max():.1f}",
            f"{100 * y[m].mean():.2f} ± {100 * y[m].std(ddof=1):.2f}",
            f"{100 * y[m].min():.2f}-{100 * y[m].max():.2f}",
        ])  # fmt: skip
    reps = [(truths[i]["val_accuracy"], r["val_accuracy"]) for i, r in by["repeat"].items() if i in truths]
    noise = (
        f"Truth noise: the fine-tune repeated with seed {st['seed'] + 1} on {len(reps)} candidates gives a "
        f"seed std of {100 * np.std([a - b for a, b in reps], ddof=1) / np.sqrt(2):.2f} pp for one run "
        "(from the paired differences), against the spread across candidates within a ratio group above."
        if len(reps) > 1
        else "The truth's seed noise was not measured (`--repeats` 0 or 1)."
    )
    proxies = [n for n in scores if n.startswith("K=")]
    baseline = next((n for n in cols if n.startswith("no recalibration")), None)
    prune_s = np.median([nets[i]["prune_s"] for i in ids])
    ft = np.median([truths[i]["finetune_s"] + truths[i]["eval_s"] for i in ids])
    per_cand = [
        [str(i), f"{nets[i]['ratio']:.2f}", f"{nets[i]['macs'] / 1e6:.1f}", f"{100 * y[j]:.2f}",
         *[f"{100 * c[i]['accuracy']:.1f}" for c in cols.values()]]
        for j, i in enumerate(ids)
    ]  # fmt: skip
    commits = sorted({r["commit"] for r in rows})
    stamp = f"Commit {meta['commit']}"
    stamp += f" with uncommitted changes to {', '.join(meta['uncommitted'])}" if meta["uncommitted"] else ""
    stamp += f"; rows from commits {', '.join(commits)}" if len(commits) > 1 else ""
    setup = SETUP.format(
        recipe=recipe(st["checkpoint"]),
        title=title, command=meta["command"], stamp=stamp, date=meta["date"], machine=meta["machine"],
        earlier="".join(f"; earlier into this cache: `{c}`" for c in meta.get("earlier_commands", [])[::-1]),
        load=meta["load_average"], threads=meta["threads"],
        versions=", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        dense_acc=100 * meta["dense_val_accuracy"], dense_mmacs=meta["dense_macs"] / 1e6, n=len(ids),
        train_items=meta["train_items"], val_items=meta["val_items"],
        augment="/".join(sorted({str(truths[i].get("augment", "n/a")) for i in ids})), **st,
    )  # fmt: skip
    heads = ["keep ratio", "candidates", "MACs, % of dense", "truth, val top-1 % (mean ± std)", "truth range"]
    cols_head = ["proxy", "Spearman", "Kendall", "Kendall within budget", "mean score"]
    pick, advice = recommend(point, boot, proxies, baseline) if proxies else (None, "No proxy column yet.")
    summary = None
    if pick is not None:
        other = [n for n in proxies if n.endswith(LOSS) != pick.endswith(LOSS) and np.isfinite(point[n][2])]
        o = max(other, key=lambda n: point[n][2]) if other else None
        c = cols[pick.removesuffix(LOSS).removesuffix(ACC)]
        summary = [
            title.removeprefix("## "), str(len(ids)), pick, interval(point[pick][2], boot[pick][:, 2]),
            "n/a" if o is None else f"{o}: {interval(point[o][2], boot[o][:, 2])}",
            interval(point[pick][0], boot[pick][:, 0]),
            f"{np.median([c[i]['score_s'] + c[i]['prune_s'] for i in ids]):.2f}",
        ]  # fmt: skip
    return "\n".join([
        setup, markdown_table(heads, groups), "",
        AGREEMENT.format(draws=draws, prune_s=prune_s, truth_s=ft), "",
        markdown_table([*cols_head, "seconds"], table), "",
        advice, "",
        noise, "",
        "<details><summary>Per candidate: truth and each score's top-1 %</summary>", "",
        markdown_table(["#", "ratio", "M MACs", "truth", *cols], per_cand), "",
        "</details>", "",
    ]), summary  # fmt: skip


def recipe(checkpoint: str) -> str:
    """How the base was trained, from its checkpoint's metadata (where it still exists)."""
    if not Path(checkpoint).is_file():
        return "checkpoint no longer there"
    train = read_checkpoint(checkpoint)[1].get("train")
    return "; ".join(f"{k} {v}" for k, v in train.items()) if isinstance(train, dict) else "not recorded"


SETUP = """{title}

Command: `{command}`{earlier}

{stamp}. Started {date}. Machine: {machine}, load average {load:.2f} at the start;
torch.set_num_threads({threads}); {versions}.

Base `{checkpoint}` (trained: {recipe}): validation top-1 {dense_acc:.2f} %, {dense_mmacs:.1f} M
MACs. {n} candidates, keep
ratios {ratios} alternating, each group's share scaled by exp(U(-{spread}, {spread})) and a common scale
bisected so the conv MACs stay within the uniform network's (grid: round_to {round_to}, min_ratio
{min_ratio}); channels kept by {criterion} via `prune_model`. **Truth** = the search's trial: BatchNorm
recalibrated on {calibration_batches} training batches, `training.train` for {finetune_epochs} epoch of
{train_items} items (lr {lr}, seed {seed}, one data order for all, augment={augment}), then top-1 on all
{val_items} validation items. **Proxy** = `AdaptiveBNProxy(train, val, batches=K, val_size=V,
seed={seed})`: K batches of 64 (the first K of one seeded shuffle, so they nest), V the first items of a
seeded shuffle of validation; its accuracy and loss are cached, and ranked two ways below.
"""

AGREEMENT = """Rank agreement with the truth: point estimate [95 % interval from {draws} bootstrap
resamples of the candidates, within each ratio group]. "Within budget" is Kendall's tau-b inside each
ratio group, averaged weighted by pairs: the search ranks networks of one budget. Each score ranks the
candidates by its accuracy (the loss breaking ties) or by its loss alone (lower is better).
Seconds per candidate: prune + (recalibrate +) score, median (range), one thread on the shared machine;
pruning alone {prune_s:.2f} s, the truth (fine-tune + evaluation) {truth_s:.0f} s (medians)."""


LIMITS = """## What limits the result

The candidates are random allocations around a uniform network at two budgets, not the ones a search
proposes; with one to two dozen per budget the within-budget Kendall interval is wide, so "within the
noise of the best" is a weak test that admits small K easily. The columns over both budgets also reward
telling a larger network from a smaller one, which is easier than the search's task. The truth is one
short fine-tune with one seed: its seed noise (measured above) caps the agreement any proxy can reach,
and a longer final fine-tune may order the networks differently. Which ranking agrees better, accuracy or
loss, is measured per model here (see the summary) and need not carry over to another model, base or
budget. Proxy and truth are both scored on the validation split (the proxy on a subset of it), as the
search selects on it; the test split is never read. Seconds are wall time on a shared 2-core machine
with one torch thread and move with its load.
"""


def write_report(args: argparse.Namespace) -> str:
    metas = sorted(args.work.glob("*/meta.json"), key=lambda p: json.loads(p.read_text())["date"])
    sections = [section(m.parent, args.bootstrap) for m in metas]
    summary = [row for _, row in sections if row is not None]
    heads = ["run", "candidates", "recommended", "its Kendall within budget", "the other ranking's best",
             "its Spearman (both budgets)", "s per candidate"]  # fmt: skip
    text = "\n".join([
        "# The adaptive-BatchNorm accuracy proxy: does it rank pruned networks, and with how many batches?",
        "",
        "Written by `scripts/bench_proxy.py` from its cached rows, never edited by hand; each section begins "
        "with the command, commit, date and machine that produced it. Summary (each run's recommendation, "
        "from the rule and the tables in its section; 95 % bootstrap intervals):",
        "",
        markdown_table(heads, summary) if summary else "No run has a recommendation yet.",
        "",
        *[text for text, _ in sections],
        LIMITS,
    ])  # fmt: skip
    write_text(args.out, text)
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="e.g. vgg11_bn")
    p.add_argument("--checkpoint", required=True, type=Path, help="the trained dense network")
    p.add_argument("--data", required=True, help="e.g. imagefolder:DIR, fashion-mnist:DIR")
    p.add_argument("--work", type=Path, default=Path("/work/bench18/proxy"), help="cache; rerun to resume")
    p.add_argument("--candidates", type=int, default=24)
    p.add_argument("--ratios", type=float, nargs="+", default=[0.45, 0.55], help="uniform keep ratios")
    p.add_argument("--spread", type=float, default=0.5, help="log keep-ratio offsets ~ U(-spread, spread)")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 5, 10, 20, 50], help="batches of 64")
    p.add_argument("--val-sizes", nargs="+", default=["1000", "all"], help="validation items scored")
    p.add_argument(
        "--big-val-ks", type=int, nargs="+", default=[5, 20, 50],
        help="the Ks also scored on the later --val-sizes (each costs about 5x V=1000's scoring)",
    )  # fmt: skip
    p.add_argument("--finetune-epochs", type=float, default=0.1, help="the truth's fine-tune")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--criterion", default="l1")
    p.add_argument("--calibration-batches", type=int, default=8, help="the search's, before its fine-tune")
    p.add_argument("--round-to", type=int, default=8)
    p.add_argument("--min-ratio", type=float, default=0.25)
    p.add_argument("--repeats", type=int, default=6, help="candidates whose truth is repeated (seed + 1)")
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples for the intervals")
    p.add_argument("--out", type=Path, default=REPO / "docs/benchmarks/proxy.md")
    p.add_argument("--report-only", action="store_true", help="rewrite the markdown from the cache")
    args = p.parse_args()
    args.checkpoint = str(args.checkpoint.resolve())
    torch.set_num_threads(1)  # the machine is shared with another benchmark
    warnings.filterwarnings("ignore", "All-NaN slice")  # an interval of a statistic every resample lacks
    try:
        if not args.report_only:
            kind, _, where = args.data.partition(":")
            run_dir = args.work / "-".join(filter(None, [args.model, kind, Path(where).name]))
            run_dir.mkdir(parents=True, exist_ok=True)
            run(args, run_dir)
        print(write_report(args))
    except AutopruneError as err:  # a user's mistake: one line naming the fix
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
