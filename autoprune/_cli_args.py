"""The command line's arguments: one parser per subcommand, strategy options from the registry."""

from __future__ import annotations

import argparse
from typing import Any

from autoprune import __version__
from autoprune._cli_options import augment_flag, input_shape, opt
from autoprune._cli_search import search_parser
from autoprune.config import AdaptConfig, FitConfig, ProtocolConfig, SamplingConfig, TrainConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoprune",
        description="Prune a trained CNN to a latency budget measured on your device: profile, fit, search, "
        "export.",
    )
    parser.add_argument("--version", action="version", version=f"autoprune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_train, _profile, _fit, search_parser, _adapt, _export, _demo):
        add(sub)
    return parser


def _train(sub: Any) -> None:
    p = sub.add_parser("train", help="train the dense model")
    p.add_argument(
        "model",
        help="resnet20 | resnet56 | vgg11_bn | mobilenet_v2 | torchvision:NAME | timm:NAME | file.py:factory",
    )
    p.add_argument(
        "--data",
        default="digits",
        help="digits | mnist:DIR | fashion-mnist:DIR | cifar10:DIR | imagefolder:DIR",
    )
    opt(p, TrainConfig, "epochs", "passes over the training split (0.5: half)")
    opt(p, TrainConfig, "lr", "SGD learning rate (cosine schedule)")
    opt(p, TrainConfig, "batch_size", "images per training batch")
    opt(p, TrainConfig, "weight_decay", "SGD weight decay")
    opt(p, TrainConfig, "seed", "seed of the initial weights, the split and the batch order")
    p.add_argument(
        "--image-size", type=int, default=32, help="images are resized to this square (default: 32)"
    )
    augment_flag(p, "each training batch")
    p.add_argument(
        "--out",
        required=True,
        help="checkpoint file to write; OUT.state.pt keeps the state after every epoch until it is "
        "written, and rerunning the same command continues from there",
    )


def _profile(sub: Any) -> None:
    from autoprune.latency.backends import list_backends

    p = sub.add_parser(
        "profile",
        help="measure the latency of sampled sub-networks (or one --shard of them; --merge joins shards)",
    )
    p.add_argument("model", nargs="?", help="the model to measure (not with --merge)")
    p.add_argument("--checkpoint", help="trained weights (latency does not depend on them)")
    p.add_argument(
        "--num-classes", type=int, help="classifier outputs (default: from the checkpoint, else 10)"
    )
    p.add_argument("--input-shape", type=input_shape, default=(1, 3, 32, 32), help="BxCxHxW, e.g. 1x3x32x32")
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
    _measurement_options(p)
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


def _fit(sub: Any) -> None:
    from autoprune.predictor import predictor_kinds

    p = sub.add_parser(
        "fit", help="compare latency predictors on a profile; save the most accurate (or --predictor KIND)"
    )
    p.add_argument("profile")
    p.add_argument("--out", required=True, help="predictor file to write (+ .json metrics, .calibration.png)")
    kinds = " | ".join(predictor_kinds())
    opt(p, FitConfig, "predictor", f"the one to save: auto | {kinds} (auto: the highest k-fold share "
        "within ±10 %, LPNet when within one paired standard error of it)")  # fmt: skip
    opt(p, FitConfig, "compare", "predictors to compare (default: all the profile allows)", metavar="KIND")
    opt(p, FitConfig, "holdout", "share of networks held out for the metrics")
    opt(p, FitConfig, "folds", "k-fold cross-validation folds (0: none)")
    opt(p, FitConfig, "include_noisy", "also use rows the profiler flagged noisy")
    opt(p, FitConfig, "members", "LPNet ensemble members")
    opt(p, FitConfig, "epochs", "LPNet training steps (full batch)")
    opt(p, FitConfig, "hidden", "LPNet hidden width")
    opt(p, FitConfig, "layers", "LPNet hidden layers")
    opt(p, FitConfig, "lr", "LPNet learning rate (Adam)")
    opt(p, FitConfig, "weight_decay", "LPNet weight decay")
    p.add_argument("--model", help="model spec, when the profile has no lookup table and its spec moved")
    opt(p, FitConfig, "seed", "seed of the split, the folds and the predictors")


def _adapt(sub: Any) -> None:
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
    opt(p, AdaptConfig, "meta_steps", "meta-training episodes (class subsets)")
    opt(p, AdaptConfig, "subset_classes", "reference classes per episode (default: half)")
    opt(p, AdaptConfig, "set_size", "images the generator reads per task")
    opt(p, AdaptConfig, "query_size", "images scored per step")
    opt(p, AdaptConfig, "adapt_steps", "gradient steps on the target")
    opt(p, AdaptConfig, "weight", "the latency loss's weight")
    opt(p, AdaptConfig, "pull", "the latency loss's pull from below the budget")
    opt(p, AdaptConfig, "lr", "the generator's learning rate")
    opt(p, AdaptConfig, "calibration_batches", "target batches for BatchNorm recalibration")
    opt(p, AdaptConfig, "finetune_epochs", "fine-tune after pruning (0: none)")
    opt(p, AdaptConfig, "finetune_lr", "the fine-tune's learning rate")
    opt(
        p,
        AdaptConfig,
        "margin",
        "least fraction the result must measure under the budget (default: the protocol's tolerance)",
    )
    opt(p, AdaptConfig, "seed", "seed of the episodes and the generator")
    p.add_argument(
        "--image-size", type=int, default=32, help="images are resized to this square (default: 32)"
    )
    p.add_argument("--out", required=True, help="run directory")


def _export(sub: Any) -> None:
    from autoprune.export import list_formats

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


def _demo(sub: Any) -> None:
    from autoprune.api import demo
    from autoprune.search import list_strategies

    p = sub.add_parser("demo", help="the whole pipeline on the embedded default, on the CPU")
    opt(p, demo, "out", "run directory; rerunning the same command resumes it", type=str)
    opt(p, demo, "epochs", "training of the dense resnet20 on digits")
    opt(p, demo, "samples", "sub-networks profiled on onnxruntime")
    opt(p, demo, "trials", "networks the search trains")
    opt(p, demo, "budget_ratio", "latency budget as a fraction of the dense network's")
    opt(p, demo, "finetune_epochs", "training per trial")
    opt(p, demo, "final_epochs", "fine-tune of the chosen network")
    opt(p, demo, "strategy", f"search strategy: {' | '.join(list_strategies())}")


def _measurement_options(p: Any) -> None:
    """Which sub-networks a profile samples (``SamplingConfig``), how each is timed (``ProtocolConfig``)."""
    opt(p, SamplingConfig, "samples", "sub-networks to measure (boundary networks included)")
    opt(p, SamplingConfig, "method", "random ratios: sobol | lhs | uniform")
    opt(p, SamplingConfig, "boundary", "skip the networks with one group alone at its narrowest")
    opt(p, SamplingConfig, "min_ratio", "smallest kept fraction per group")
    opt(
        p,
        SamplingConfig,
        "round_to",
        "widths of groups of --round-min-channels or more are multiples of this",
    )
    opt(p, SamplingConfig, "round_min_channels", "groups narrower than this keep whole-channel widths")
    opt(p, SamplingConfig, "seed", "seed of the sampled widths")
    opt(p, ProtocolConfig, "warmup_ms", "each network runs this long before it is timed")
    opt(p, ProtocolConfig, "iterations", "minimum timed runs per round")
    opt(p, ProtocolConfig, "min_round_ms", "minimum duration of a round")
    opt(p, ProtocolConfig, "rounds", "rounds per network; its latency is the median of their medians")
    opt(p, ProtocolConfig, "max_deviation", "re-measure a round this far from the median")
    opt(p, ProtocolConfig, "max_round_iqr", "re-measure a round whose interquartile range is this wide")
    opt(p, ProtocolConfig, "max_remeasures", "re-measured rounds per network, at most")
    opt(
        p,
        ProtocolConfig,
        "reference_every",
        "time the dense network beside every K-th network to correct for drift (0: never)",
    )
