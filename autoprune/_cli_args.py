"""The command line's arguments: one parser per subcommand, strategy options from the registry."""

from __future__ import annotations

import argparse

from autoprune import __version__
from autoprune.config import MEASURE_SECONDS


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) != 4 or min(dims) < 1:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a shape like 1x3x32x32 (batch x channels x height x width)"
        )
    return dims


def build_parser() -> argparse.ArgumentParser:
    from autoprune.export import list_formats
    from autoprune.latency.backends import list_backends

    parser = argparse.ArgumentParser(
        prog="autoprune",
        description="Prune a trained CNN to a latency budget measured on your device: profile, fit, search, "
        "export.",
    )
    parser.add_argument("--version", action="version", version=f"autoprune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train the dense model")
    p.add_argument(
        "model", help="resnet20 | resnet56 | vgg11_bn | mobilenet_v2 | torchvision:NAME | file.py:factory"
    )
    p.add_argument(
        "--data",
        default="digits",
        help="digits | mnist:DIR | fashion-mnist:DIR | cifar10:DIR | imagefolder:DIR",
    )
    p.add_argument("--epochs", type=float, default=10, help="passes over the training split (0.5: half)")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=32)
    _augment_flag(p, "each training batch")
    p.add_argument(
        "--out",
        required=True,
        help="checkpoint file to write; OUT.state.pt keeps the state after every epoch until it is "
        "written, and rerunning the same command continues from there",
    )

    p = sub.add_parser(
        "profile",
        help="measure the latency of sampled sub-networks (or one --shard of them; --merge joins shards)",
    )
    p.add_argument("model", nargs="?", help="the model to measure (not with --merge)")
    p.add_argument("--checkpoint", help="trained weights (latency does not depend on them)")
    p.add_argument(
        "--num-classes", type=int, help="classifier outputs (default: from the checkpoint, else 10)"
    )
    p.add_argument("--input-shape", type=_shape, default=(1, 3, 32, 32), help="BxCxHxW, e.g. 1x3x32x32")
    p.add_argument("--backend", default="onnxruntime", help=" | ".join(list_backends()))
    p.add_argument("--device", help="cpu | cuda | cuda:N (default: the backend's: cpu, tensorrt on GPU 0)")
    p.add_argument("--precision", help="fp32 | fp16 | int8 (int8: tensorrt only; default fp32)")
    p.add_argument("--threads", type=int, help="CPU intra-op threads (default 1)")
    p.add_argument(
        "--cuda-graph",
        action=argparse.BooleanOptionalAction,
        help="replay a captured CUDA graph, as trtexec --useCudaGraph (default: on for torch and tensorrt on "
        "CUDA; a network that cannot be captured is timed without one, and the profile records it)",
    )
    p.add_argument(
        "--transfers", action="store_true", help="time host<->device copies too (default: compute only)"
    )
    p.add_argument("--workspace-mib", type=int, help="tensorrt builder workspace limit")
    p.add_argument(
        "--samples", type=int, default=100, help="sub-networks to measure (boundary networks included)"
    )
    p.add_argument("--method", default="sobol", help="random ratios: sobol | lhs | uniform")
    p.add_argument(
        "--no-boundary", action="store_true", help="skip the networks with one group alone at its narrowest"
    )
    p.add_argument("--min-ratio", type=float, default=0.25, help="smallest kept fraction per group")
    p.add_argument(
        "--round-to", type=int, default=8, help="widths of groups >= 16 channels are multiples of this"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup-ms", type=float, default=200.0)
    p.add_argument("--iterations", type=int, default=30, help="minimum timed runs per round")
    p.add_argument("--min-round-ms", type=float, default=50.0, help="minimum duration of a round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--max-deviation", type=float, default=0.03, help="re-measure a round this far from the median"
    )
    p.add_argument("--max-remeasures", type=int, default=3, help="re-measured rounds per network, at most")
    p.add_argument(
        "--reference-every",
        type=int,
        default=2,
        help="time the dense network beside every K-th network to correct for drift (0: never; default 2)",
    )
    p.add_argument("--lut", action="store_true", help="also measure the per-layer lookup table (HALP)")
    p.add_argument("--lut-grid", type=int, default=8, help="widths per axis in the lookup table")
    p.add_argument(
        "--active",
        action="store_true",
        help="after --active-initial planned networks, measure where the LPNet ensemble disagrees most",
    )
    p.add_argument("--budget-ms", type=float, help="--active: prefer networks predicted near this latency")
    p.add_argument("--active-initial", type=int, default=20, help="--active: planned networks measured first")
    p.add_argument("--active-batch", type=int, default=10, help="--active: networks chosen per LPNet refit")
    p.add_argument(
        "--shard",
        metavar="I/N",
        help="measure only the I-th of N disjoint parts of the plan (I from 1; every N-th network from the "
        "I-th on), e.g. one per machine with identical devices; join them with --merge",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        metavar="SHARD",
        help="join the shard profiles 1/N ... N/N (measured on identical devices with the same command "
        "but --shard) into the profile --out, measuring nothing",
    )
    p.add_argument(
        "--partial", action="store_true", help="--merge: allow missing shards or networks (a smaller profile)"
    )
    p.add_argument(
        "--out",
        help="PROFILE.parquet (default: latency_profiles/<device>/<model>__<backend>__<precision>__"
        "bs<N>__<H>x<W>.parquet, a shard's ending __shard<I>of<N>.parquet; --merge: required); its JSON "
        "sidecar is written beside it",
    )

    from autoprune.predictor import predictor_kinds

    p = sub.add_parser(
        "fit", help="compare latency predictors on a profile; save the most accurate (or --predictor KIND)"
    )
    p.add_argument("profile")
    p.add_argument("--out", required=True, help="predictor file to write (+ .json metrics, .calibration.png)")
    p.add_argument(
        "--predictor",
        default="auto",
        help=f"the one to save: auto | {' | '.join(predictor_kinds())} (default auto: the highest k-fold "
        "share within ±10 %%, LPNet when within one paired standard error of it)",
    )
    p.add_argument("--compare", nargs="+", help="predictors to compare (default: all the profile allows)")
    p.add_argument("--holdout", type=float, default=0.2, help="share of networks held out for the metrics")
    p.add_argument("--folds", type=int, default=5, help="k-fold cross-validation folds (0: none)")
    p.add_argument("--include-noisy", action="store_true", help="also use rows the profiler flagged noisy")
    p.add_argument("--members", type=int, default=5, help="LPNet ensemble members")
    p.add_argument("--epochs", type=int, default=600, help="LPNet training epochs (full batch)")
    p.add_argument("--hidden", type=int, default=64, help="LPNet hidden width")
    p.add_argument("--model", help="model spec, when the profile has no lookup table and its spec moved")
    p.add_argument("--seed", type=int, default=0)

    from autoprune.search import list_criteria, list_strategies, strategy_options

    p = sub.add_parser(
        "search", help="search per-group widths under a latency budget or an accuracy tolerance"
    )
    p.add_argument("model")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--predictor", required=True)
    budget = p.add_mutually_exclusive_group()  # one of them, or --max-accuracy-drop (SearchConfig checks)
    budget.add_argument("--budget-ms", type=float, help="latency budget in milliseconds")
    budget.add_argument(
        "--budget-ratio", type=float, help="budget as a fraction of the dense latency measured now"
    )
    p.add_argument(
        "--max-accuracy-drop",
        type=float,
        help="the fastest network whose validation accuracy is at most this many percentage points below "
        "the dense network's (Play and Prune; default strategy then playprune); with a budget too, both hold",
    )
    p.add_argument(
        "--budget-confidence",
        type=float,
        help="constrain the predictor's calibrated upper bound, not its prediction: a network drawn like "
        "the profile's measures under it with this probability (e.g. 0.95)",
    )
    p.add_argument(
        "--strategy",
        help=f"how networks are proposed: {' | '.join(list_strategies())} "
        "(default optuna: TPE under the predicted-latency constraint, or with --max-accuracy-drop playprune: "
        "Play and Prune's adaptive pruning rate; gates: W-Gates trained against an LPNet predictor)",
    )
    p.add_argument(
        "--objectives",
        type=int,
        default=1,
        choices=[1, 2],
        help="optuna/flops: 2 runs NSGA-II on (accuracy, predicted latency) and reports the Pareto front",
    )
    p.add_argument(
        "--no-prune-trials", action="store_true", help="optuna: do not stop hopeless trials (median pruner)"
    )
    p.add_argument("--trials", type=int, default=None, help=_trials_help())
    p.add_argument(
        "--storage",
        help="Optuna storage (default: a sqlite file in the run directory, one worker). Several workers "
        "share a study on postgresql://USER@HOST/DB (pip install 'autoprune[postgres]') or "
        "journal:///FILE.log (workers on one machine): together they train --trials networks",
    )
    p.add_argument(
        "--study", default="autoprune", help="Optuna study name; rerun the same one to resume, or share it"
    )
    p.add_argument(
        "--finetune-epochs",
        type=float,
        default=1.0,
        help="training per trial before evaluation (gates: the joint training's length)",
    )
    p.add_argument("--final-epochs", type=float, default=5.0, help="fine-tune of the chosen network")
    _augment_flag(p, "the fine-tunes' batches")
    p.add_argument("--finalists", type=int, default=3, help="candidates re-measured at a time")
    p.add_argument(
        "--criterion",
        default="l1",
        help=f"which channels of a group are kept: {' | '.join(list_criteria())}",
    )
    p.add_argument(
        "--calibration-batches",
        type=int,
        default=8,
        help="training batches for BatchNorm recalibration after pruning and for data-aware criteria",
    )
    p.add_argument(
        "--proxy-batches",
        type=int,
        default=5,
        help="screen: the accuracy proxy re-estimates BatchNorm statistics on this many fixed train batches",
    )
    p.add_argument(
        "--proxy-val",
        type=int,
        default=1000,
        help="screen: the proxy scores on this many fixed validation items",
    )
    p.add_argument("--distill", action="store_true", help="the final fine-tune distils from the dense model")
    p.add_argument(
        "--margin",
        type=float,
        help="least fraction a finalist must measure under the budget (default: the protocol's tolerance)",
    )
    p.add_argument(
        "--measure-seconds",
        type=float,
        default=MEASURE_SECONDS,
        help="finalists are judged on their ratio to the dense network timed beside them: repeats are "
        "added, up to this many seconds per batch, while a ratio's spread exceeds the margin",
    )
    p.add_argument("--lr", type=float, default=0.05, help="fine-tune learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--out", required=True, help="run directory")
    own = p.add_argument_group("strategy options (each strategy's own, from the registry)")
    for option in strategy_options().values():
        own.add_argument(
            option.flag, type=option.type, help=option.help, dest=f"strategy_{option.name}",
            metavar=option.name.upper(),
        )  # fmt: skip

    p = sub.add_parser(
        "adapt",
        help="STAMP: prune for a new dataset with a mask generator meta-learned on the reference data",
    )
    p.add_argument("model")
    p.add_argument("--checkpoint", required=True, help="weights trained on the reference data")
    p.add_argument("--reference", required=True, help="the dataset the checkpoint was trained on")
    p.add_argument("--data", required=True, help="the target dataset to prune for")
    p.add_argument("--predictor", required=True, help="a differentiable (lpnet) latency predictor")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--budget-ms", type=float, help="latency budget in milliseconds")
    budget.add_argument(
        "--budget-ratio", type=float, help="budget as a fraction of the dense latency measured now"
    )
    p.add_argument("--meta-steps", type=int, default=300, help="meta-training episodes (class subsets)")
    p.add_argument("--subset-classes", type=int, help="reference classes per episode (default: half)")
    p.add_argument("--set-size", type=int, default=64, help="images the generator reads per task")
    p.add_argument("--query-size", type=int, default=64, help="images scored per step")
    p.add_argument("--adapt-steps", type=int, default=20, help="gradient steps on the target")
    p.add_argument("--weight", type=float, default=2.0, help="the latency loss's weight")
    p.add_argument("--lr", type=float, default=0.05, help="the generator's learning rate")
    p.add_argument("--finetune-epochs", type=float, default=0.0, help="fine-tune after pruning (0: none)")
    p.add_argument("--finetune-lr", type=float, default=0.01)
    p.add_argument(
        "--margin",
        type=float,
        help="least fraction the result must measure under the budget (default: the protocol's tolerance)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--out", required=True, help="run directory")

    p = sub.add_parser("export", help="export a pruned network")
    p.add_argument("source", help="a run directory or its pruned.pt")
    p.add_argument("--format", default="onnx", choices=list_formats(), help="default: onnx")
    p.add_argument(
        "--out", help="file to write (default: model.onnx or model.<precision>.engine beside pruned.pt)"
    )
    trt = p.add_argument_group("tensorrt (like trtexec --onnx=... --saveEngine=...)")
    trt.add_argument(
        "--precision",
        choices=["fp32", "fp16", "int8"],
        help="default: the search's, if it measured with tensorrt, else fp32",
    )
    trt.add_argument(
        "--max-batch", type=int, help="largest batch the engine accepts (default: the profile's)"
    )
    trt.add_argument(
        "--workspace-mib", type=int, help="builder workspace limit (default: the search's, else 1024)"
    )
    trt.add_argument(
        "--device", help="GPU to build and measure on: cuda or cuda:N (default: the search's, else cuda)"
    )
    trt.add_argument(
        "--verify",
        action="store_true",
        help="measure the engine as the search's profile did and fail when it is over the budget",
    )
    trt.add_argument(
        "--budget-ms", type=float, help="budget for --verify (default: the search's, if TensorRT)"
    )
    trt.add_argument("--calib-data", help="int8: dataset spec whose training images calibrate the engine")
    trt.add_argument("--calib-batches", type=int, default=16, help="int8: calibration batches")

    p = sub.add_parser("demo", help="the whole pipeline on the embedded default, on the CPU")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--epochs", type=float, default=8)
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--trials", type=int, default=24)
    p.add_argument("--budget-ratio", type=float, default=0.6)
    p.add_argument("--finetune-epochs", type=float, default=1.0)
    p.add_argument("--final-epochs", type=float, default=5)
    p.add_argument("--strategy", default="optuna", help=f"search strategy: {' | '.join(list_strategies())}")
    return parser


def _augment_flag(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"random crop (4-pixel zero padding) and horizontal flip of {what} (default: on for "
        "cifar10 and imagefolder data, off for digits, mnist and fashion-mnist)",
    )


def _trials_help() -> str:
    """What ``--trials`` counts under each strategy, and its default there, from the registry."""
    from autoprune.search import list_strategies, strategy_class

    each = "; ".join(
        f"{n}: {strategy_class(n).trial_means} ({strategy_class(n).default_trials})"
        for n in list_strategies()
    )
    return f"how many trials; what a trial is and the default depend on --strategy: {each}"
