"""Sweep torchvision's classification models (or timm's CNN families) through autoprune's graph, prune and
export path.

    python scripts/sweep_models.py --out docs/models.md [--cache docs/models.jsonl] [--models a,b]
    python scripts/sweep_models.py --source timm [--models a,b]   # docs/models-timm.md (+ .jsonl)

For each model of ``torchvision.models.list_models(module=torchvision.models)`` (``--source timm``: one or
two small members of each convolutional family of timm, ``TIMM_FAMILIES``), untrained (10 classes), at
64x64 (or, when the model cannot run at 64x64, the minimum size its torchvision weights declare; timm: the
first of 75, 96, 128 that runs, else the size its config declares): build the
ChannelGraph, score the channels (l1), and for a few widths (dense, every group at ~50 %, a seeded random
choice per group) prune physically with ``autoprune.prune.prune_model``, run a forward pass, export ONNX
with ``autoprune.export.export_onnx`` (which checks onnxruntime's outputs against torch's) and, for the
random widths, save and reload the pruned network as ``autoprune export`` does and compare its outputs.

Each model runs in its own process with a time and address-space limit, so a crash or a memory blow-up
ends that model's row only. Every row is appended to the cache (JSON lines) as it finishes: a rerun skips
the models already there (``--retry`` runs the failed and not-run rows again). The table is rewritten
from the cache after each model. Statuses: ``works``; ``refused`` (autoprune stopped it at the start with
its one-line message); ``failed`` (anything else: the stage and the error); ``not run`` (the reason, e.g.
the time or memory limit of this sweep).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SIZES = (64,)  # tried first; then the minimum size the model's pretrained weights declare
CLASSES = 10

# timm's convolutional families, one or two small members each (``--source timm`` sweeps these, in this
# order; ``--models`` takes any other timm name too).
TIMM_FAMILIES: dict[str, tuple[str, ...]] = {
    "resnet": ("resnet18", "resnet10t"),
    "resnetv2": ("resnetv2_50",),
    "resnext (byobnet)": ("resnext26ts",),
    "regnet": ("regnetx_002", "regnety_002"),
    "efficientnet": ("efficientnet_b0", "tf_efficientnet_b0"),
    "mobilenetv3": ("mobilenetv3_small_100",),
    "mobilenetv4": ("mobilenetv4_conv_small",),
    "ghostnet": ("ghostnet_100",),
    "rexnet": ("rexnet_100",),
    "dla": ("dla34",),
    "dpn": ("dpn68",),
    "cspnet": ("cspresnet50", "cspdarknet53"),
    "convnext": ("convnext_atto",),
    "repvgg (byobnet)": ("repvgg_a0",),
    "mixnet": ("mixnet_s",),
    "hrnet": ("hrnet_w18_small",),
    "vovnet": ("ese_vovnet19b_dw",),
    "densenet": ("densenet121",),
    "inception": ("inception_v3",),
    "xception": ("xception41", "legacy_xception"),
    "senet / sknet": ("seresnet18", "skresnet18"),
    "res2net": ("res2net50_14w_8s",),
    "selecsls": ("selecsls42b",),
    "mobileone": ("mobileone_s0",),
    "vgg": ("vgg11",),
}


def _names(source: str) -> list[str]:
    if source == "timm":
        return [n for members in TIMM_FAMILIES.values() for n in members]
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def _family(name: str) -> str:
    return next((f for f, members in TIMM_FAMILIES.items() if name in members), "")


def _params(name: str, source: str = "torchvision") -> int:
    """The parameter count torchvision's weight metadata gives (1000 classes), without building it; 0 for
    timm (its metadata has none: ``--source timm`` keeps the families' order)."""
    if source != "torchvision":
        return 0
    import torchvision

    try:
        return int(torchvision.models.get_model_weights(name).DEFAULT.meta["num_params"])
    except Exception:
        return 0


def _min_size(name: str, net: Any, source: str) -> int:
    """The smallest input the model's pretrained weights declare (timm: ``min_input_size``, else the
    ``input_size`` it was trained at), 224 when unknown."""
    if source == "timm":
        cfg = getattr(net, "pretrained_cfg", None) or {}
        return int(max((cfg.get("min_input_size") or cfg.get("input_size") or (3, 224, 224))[1:]))
    import torchvision

    try:
        return int(max(torchvision.models.get_model_weights(name).DEFAULT.meta.get("min_size", (1, 1))))
    except Exception:
        return 224


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


def calibrate(net: Any, shape: list[int]) -> None:
    """BatchNorm statistics of one random batch: untrained networks in eval mode can give logits of 1e-13
    (EfficientNet, MobileNetV3), where any ONNX graph passes the parity check; these give logits of order
    one, as a trained network's."""
    import torch

    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None
                m.train()  # only BatchNorm: no auxiliary heads (Inception's), no dropout
        net(torch.randn(8, *shape[1:], generator=torch.Generator().manual_seed(0)))
        net.eval()


def run_one(name: str, source: str = "torchvision") -> dict[str, Any]:
    """Sweep one model of ``source`` in this process; the row to cache."""
    import random

    import torch

    from autoprune.errors import AutopruneError
    from autoprune.export import export_onnx
    from autoprune.graph import ChannelGraph, allowed_widths, snap_width
    from autoprune.models import check_forward, create_model
    from autoprune.prune import load_pruned, prune_model, save_pruned
    from autoprune.search.criteria import channel_scores

    torch.manual_seed(0)
    torch.set_num_threads(1)
    spec = f"{source}:{name}"
    row: dict[str, Any] = {"model": name, "widths": []}
    start = time.perf_counter()
    stage = "build"
    try:
        net = create_model(spec, num_classes=CLASSES).eval()
        with torch.no_grad():  # zero-initialised heads (ViT's) would make every parity check vacuous
            for p in net.parameters():
                if p.dim() > 1 and not bool(p.any()):
                    p.normal_(0.0, 0.02)
        row["params_m"] = round(sum(p.numel() for p in net.parameters()) / 1e6, 2)
        stage = "forward (dense)"
        size = None
        # timm declares no minimum size: try a few before the size it was trained at (inception_v3: 75)
        ladder = (75, 96, 128) if source == "timm" else ()
        for s in (*SIZES, *ladder, _min_size(name, net, source), 224):  # 224: torchvision's ViTs
            try:
                check_forward(net, spec, [1, 3, s, s])
                size = s
                break
            except AutopruneError as exc:
                last = exc
        if size is None:
            raise last
        row["input"] = size
        shape = [1, 3, size, size]
        stage = "batchnorm statistics"
        calibrate(net, shape)
        example = torch.zeros(*shape)
        stage = "graph"
        graph = ChannelGraph(net, example)
        groups = graph.groups
        row["groups"] = len(groups)
        row["prunable_channels"] = sum(g.channels for g in groups)
        del graph
        stage = "scores"
        scores = channel_scores(net, example, "l1")
        rng = random.Random(0)
        choices = {g.name: allowed_widths(g.channels, min_ratio=0.25) for g in groups}
        plans = {
            "dense": {g.name: g.channels for g in groups},
            "50%": {g.name: snap_width(0.5 * g.channels, choices[g.name]) for g in groups},
            "random": {g.name: rng.choice(choices[g.name]) for g in groups},
        }
        x = torch.randn(2, *shape[1:], generator=torch.Generator().manual_seed(1))
        with tempfile.TemporaryDirectory() as tmp:
            for label, widths in plans.items():
                t0 = time.perf_counter()
                stage = f"prune ({label})"
                pruned = prune_model(
                    net, widths=widths, model_spec=spec, num_classes=CLASSES, input_shape=shape, scores=scores
                )
                stage = f"forward ({label})"
                with torch.no_grad():
                    y = pruned.module(x)
                if tuple(y.shape) != (2, CLASSES) or not bool(y.isfinite().all()):
                    raise RuntimeError(
                        f"output of shape {tuple(y.shape)}, finite: {bool(y.isfinite().all())}"
                    )
                kept = sum(widths.values()) / max(1, row["prunable_channels"])
                entry: dict[str, Any] = {"widths": label, "kept": round(kept, 3)}
                entry["params_m"] = round(sum(p.numel() for p in pruned.module.parameters()) / 1e6, 2)
                if label == "random":
                    stage = "save/load (random)"
                    save_pruned(Path(tmp) / "pruned.pt", pruned)
                    again = load_pruned(Path(tmp) / "pruned.pt").module
                    with torch.no_grad():
                        diff = float((again(x) - y).abs().max())
                    if diff > 1e-5:
                        raise RuntimeError(f"reloaded pruned network differs by {diff:.3g}")
                stage = f"onnx ({label})"
                out = export_onnx(pruned.module, shape, Path(tmp) / f"{label}.onnx")
                entry["onnx_diff"] = float(f"{out.max_abs_diff:.3g}")
                entry["logit_max"] = float(f"{float(y.abs().max()):.3g}")
                entry["exporter"] = getattr(out, "exporter", "torchscript")
                entry["seconds"] = round(time.perf_counter() - t0, 1)
                row["widths"].append(entry)
                del pruned
        row["status"] = "works"
    except AutopruneError as exc:
        row["status"] = "refused"
        row["stage"] = stage
        row["message"] = str(exc)
    except Exception as exc:
        row["status"] = "failed"
        row["stage"] = stage
        row["message"] = _one_line(exc)
        frames = traceback.extract_tb(exc.__traceback__)
        if frames:
            f = frames[-1]
            row["where"] = f"{Path(f.filename).name}:{f.lineno}"
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def run_isolated(
    name: str, *, timeout: float, memory_gb: float, source: str = "torchvision"
) -> dict[str, Any]:
    """Run one model in a child process under a time and address-space limit."""

    def limit() -> None:
        cap = int(memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        os.nice(0)

    cmd = [sys.executable, __file__, "--one", name, "--source", source]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, preexec_fn=limit, check=False
        )
    except subprocess.TimeoutExpired:
        return {"model": name, "status": "not run", "message": f"over this sweep's {timeout:.0f} s limit"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode == 0 and lines:
        return json.loads(lines[-1])
    tail = " ".join(done.stderr.split())[-300:]
    if "MemoryError" in tail or "std::bad_alloc" in tail or "DefaultCPUAllocator" in tail:
        return {
            "model": name,
            "status": "not run",
            "message": f"over this sweep's {memory_gb:g} GB memory limit",
        }
    return {"model": name, "status": "failed", "message": f"process exited {done.returncode}: {tail}"}


def load_cache(path: Path) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows[row["model"]] = row
    return rows


def render(
    rows: dict[str, dict[str, Any]],
    names: list[str],
    command: str,
    note: str = "",
    source: str = "torchvision",
) -> str:
    import torch
    import torch_pruning
    import torchvision

    counts: dict[str, int] = {}
    for r in rows.values():  # a refusal that came from running out of memory is no clean refusal
        if r.get("status") == "refused" and "MemoryError" in r.get("message", ""):
            r["status"] = "failed"
            r["message"] = (
                f"refused only after {r.get('seconds')} s, when Torch-Pruning ran out of memory: "
                + r["message"]
            )
    for n in names:
        status = rows.get(n, {}).get("status", "pending")
        counts[status] = counts.get(status, 0) + 1
    summary = ", ".join(
        f"{counts[k]} {k}" for k in ("works", "refused", "failed", "not run", "pending") if k in counts
    )
    versions = (
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"torch-pruning {torch_pruning.__version__}"
    )
    if source == "timm":
        import timm

        versions += f", timm {timm.__version__}"
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), Python {platform.python_version()}"
    header: tuple[str, ...] = (
        "model",
        "status",
        "input",
        "params (M)",
        "groups",
        "prunable ch.",
        "kept (random)",
    )
    header += ("max abs logit", "ONNX diff", "exporter", "s", "note")
    if source == "timm":
        header = ("family", *header)
    lines = [
        f"# {source} models through autoprune",
        "",
        f"Command: `{command}`{note}  ",
        f"Machine: {machine}, {versions}  ",
        f"Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        f"**{len(names)} models: {summary}.**",
        "",
        _scope(source)
        + f"untrained with {CLASSES} classes (an all-zero weight, as ViT's head, drawn at random so that the "
        "parity check means something), at 64x64 or, when it cannot run that small, "
        + _fallback_size(source)
        + ". *works*: the channel graph was built and, at three widths (dense, "
        "every group at ~50 %, a seeded random width per group between 25 % and 100 %), the network was "
        "pruned physically, ran forward, was saved and reloaded (random widths) and exported to ONNX with "
        "onnxruntime's outputs within tolerance of torch's. *refused*: autoprune stopped at the start with "
        "the one-line message shown (exit status 2 in the CLI). *kept* is the fraction of prunable channels "
        "kept at the random widths; *max abs logit* the smallest, over the widths, of max |torch output| "
        "(the parity tolerance is 1e-4 + 1e-3 x that, so the check is weak where it is tiny); *ONNX diff* "
        "the largest |onnxruntime - torch| over the widths; *s* the seconds for the model on this shared "
        "machine. BatchNorm statistics come from one random batch first: untrained in eval mode, several "
        "networks give logits near 1e-13. A row whose logit is *not recorded* was swept before that "
        "calibration was added, so its parity check may be weak (rerun it with `--redo`); the family test "
        "calibrates and asserts logits above 1e-3.",
        "",
        "This full list comes from `scripts/sweep_models.py` (resumable: rows are cached in the JSON-lines "
        "file beside this one). The test suite runs one small member of each family "
        f"(`tests/models/test_{source}_sweep.py`, marked slow)." + _elsewhere(source),
        "",
        *_causes(source),
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for n in names:
        r = rows.get(n)
        first = f"| {_family(n)} | {n}" if source == "timm" else f"| {n}"
        if r is None:
            lines.append(f"{first} | pending | | | | | | | | | |")
            continue
        ws = r.get("widths", [])
        rand = next((w for w in ws if w["widths"] == "random"), None)
        diff = max((w.get("onnx_diff", 0.0) for w in ws), default=None)
        logits = [w["logit_max"] for w in ws if "logit_max" in w]
        logit = f"{min(logits):.2g}" if logits else ("not recorded" if ws else "")
        exporters = sorted({w.get("exporter", "") for w in ws} - {""})
        note = r.get("message", "")
        if r.get("status") == "failed":
            note = f"{r.get('stage', '')}: {note}" + (f" ({r['where']})" if r.get("where") else "")
        note = note.replace("|", "\\|")
        lines.append(
            f"{first} | {r.get('status')} | {r.get('input', '')} | {r.get('params_m', '')} | "
            f"{r.get('groups', '')} | {r.get('prunable_channels', '')} | {rand['kept'] if rand else ''} | "
            f"{logit} | {'' if diff is None else f'{diff:.2g}'} | {', '.join(exporters)} | "
            f"{r.get('seconds', '')} | {note} |"
        )
    return "\n".join(lines) + "\n"


def _fallback_size(source: str) -> str:
    if source == "timm":  # timm declares no minimum size
        return "the smallest of 75, 96 and 128 that runs, else the input size its timm config declares"
    return f"the minimum size its {source} weights declare"


def _elsewhere(source: str) -> str:
    if source == "timm":
        return " The torchvision models are in `docs/models.md`."
    return " timm's CNN families (`timm:NAME`) are in `docs/models-timm.md`."


def _causes(source: str) -> list[str]:
    """What the sweep found behind the rows that do not work (timm), as diagnosed when it was run."""
    if source != "timm":
        return []
    return [
        "Causes found (torch-pruning 1.6.0): *torch.split(x, n)* (CSPNet, Res2Net, MixNet, SKNet's split "
        "input) keeps its sizes in the model's code, and Torch-Pruning gives the split one chunk per op that "
        "reads it, not one per chunk (a group's indices ran past a layer: IndexError while scoring); "
        "`ChannelGraph` now leaves every group through a split of the channel axis dense, as it does for "
        "grouped convolutions, and those families work. Still open: GhostNet's `cat([x1, cheap(x1)])` added "
        "to a shortcut and SKNet's reshaped attention map two of the group root's channels onto one channel "
        "of a layer, so pruning the group empties a convolution (*refused*, naming the emptied layer); "
        "RexNet's `cat([x[:, :C] + shortcut, x[:, C:]])` chains make Torch-Pruning's group search "
        "(`get_all_groups`) re-walk a layer for every new subset of its indices, which does not end "
        "(*refused* after `ChannelGraph`'s limit of 120 s on that search); DPN's dual-path `cat` is refused "
        "when the graph is built.",
        "",
    ]


def _scope(source: str) -> str:
    """The start of the sentence that says which models the table holds."""
    if source == "timm":
        return (
            "One or two small members of each convolutional family of timm (`TIMM_FAMILIES` in the script; "
            "built with `timm.create_model(name, pretrained=False, num_classes=10)`, as `timm:NAME` is), "
        )
    return (
        "Every torchvision classification model "
        "(`torchvision.models.list_models(module=torchvision.models)`), "
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--source",
        choices=("torchvision", "timm"),
        default="torchvision",
        help="torchvision: every classifier; timm: TIMM_FAMILIES (needs timm installed)",
    )
    ap.add_argument(
        "--out", type=Path, default=None, help="docs/models.md (timm: docs/models-timm.md) by default"
    )
    ap.add_argument(
        "--cache", type=Path, default=None, help="JSON lines of finished rows (default: OUT.jsonl)"
    )
    ap.add_argument(
        "--models", default="", help="comma-separated subset or, for timm, more names (default: all)"
    )
    ap.add_argument("--retry", action="store_true", help="run the failed and not-run rows again")
    ap.add_argument("--redo", default="", help="comma-separated models to run again whatever their row")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per model")
    ap.add_argument("--memory-gb", type=float, default=12.0, help="address-space limit per model process")
    ap.add_argument(
        "--max-params",
        type=float,
        default=200.0,
        help="torchvision models with more million parameters are not run (timm: no metadata, all run)",
    )
    ap.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="MODEL=REASON",
        help="record MODEL as not run, for REASON",
    )
    ap.add_argument("--render", action="store_true", help="only rewrite OUT from the cache")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.source)), flush=True)
        return
    source = args.source
    if args.out is None:
        args.out = Path("docs/models.md" if source == "torchvision" else f"docs/models-{source}.md")
    cache = args.cache or args.out.with_suffix(".jsonl")
    names = _names(source)
    todo = [n for n in args.models.split(",") if n] or list(names)
    if source == "timm":
        names += [n for n in todo if n not in names]  # a timm name outside TIMM_FAMILIES gets a row too
    todo.sort(key=lambda n: _params(n, source))  # small models first: a partial sweep covers the most
    rows = load_cache(cache)
    redo = {n for n in args.redo.split(",") if n}
    skip = dict(item.split("=", 1) for item in args.skip)
    command = shlex.join(["python", "scripts/sweep_models.py", *sys.argv[1:]])
    note = ""
    if args.render:
        todo = []
        argv = [a for a in sys.argv[1:] if a != "--render"]
        command = shlex.join(["python", "scripts/sweep_models.py", *argv])
        note = " (run several times, resuming; rows rerun with `--redo` after fixes)"
    for name in todo:
        old = rows.get(name)
        if (
            old is not None
            and name not in redo
            and not (args.retry and old["status"] in ("failed", "not run"))
        ):
            continue
        print(f"{datetime.now(timezone.utc):%H:%M:%S} {name} ...", flush=True)
        if name in skip:
            row = {"model": name, "status": "not run", "message": skip[name]}
        elif _params(name, source) > args.max_params * 1e6:
            row = {
                "model": name,
                "status": "not run",
                "params_m": round(_params(name, source) / 1e6, 1),
                "message": f"over this sweep's --max-params {args.max_params:g}M (time and memory on this "
                "shared machine); run it with a larger --max-params",
            }
        else:
            row = run_isolated(name, timeout=args.timeout, memory_gb=args.memory_gb, source=source)
        row["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        print(f"    {row['status']} {row.get('seconds', '')} s {row.get('message', '')}", flush=True)
        rows[name] = row
        cache.parent.mkdir(parents=True, exist_ok=True)
        with cache.open("a") as f:
            f.write(json.dumps(row) + "\n")
        args.out.write_text(render(rows, names, command, note, source))
    args.out.write_text(render(rows, names, command, note, source))


if __name__ == "__main__":
    main()
