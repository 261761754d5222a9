"""``autoprune search``'s arguments: the budgets (one device's, or a ``--target`` per device), the
strategy and its own options from the registry, and how networks are trained and measured."""

from __future__ import annotations

import argparse
from typing import Any

from autoprune._cli_options import augment_flag, opt, trials_help
from autoprune.config import SearchConfig


def _search_budgets(p: argparse.ArgumentParser) -> None:
    """``search``'s budgets: the device's predictor and budget, other targets, an accuracy tolerance."""
    p.add_argument("--predictor", help="the device's latency predictor (autoprune fit --out)")
    budget = p.add_mutually_exclusive_group()  # one of them, or --max-accuracy-drop (SearchConfig checks)
    budget.add_argument("--budget-ms", type=float, help="latency budget in milliseconds")
    budget.add_argument(
        "--budget-ratio", type=float, help="budget as a fraction of the dense latency measured now"
    )
    p.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="PREDICTOR:BUDGET",
        help="a budget on one device, repeated for several: the network must meet every one. BUDGET in ms "
        "(0.35ms) or as a share of that device's dense latency (50%%); e.g. --target cpu_bs1.pt:0.35ms "
        "--target cpu_bs32.pt:50%%. Targets this machine can time are measured; others are judged on their "
        "predictor's upper bound. Without --predictor, the first --target is the one the search runs on",
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


def search_parser(sub: Any) -> None:
    from autoprune.search import list_strategies, strategy_options

    p = sub.add_parser(
        "search", help="search per-group widths under a latency budget or an accuracy tolerance"
    )
    p.add_argument("model")
    p.add_argument("--checkpoint", required=True, help="the trained dense network (autoprune train --out)")
    p.add_argument(
        "--data", required=True, help="digits | mnist:DIR | fashion-mnist:DIR | cifar10:DIR | imagefolder:DIR"
    )
    _search_budgets(p)
    p.add_argument(
        "--strategy",
        help=f"how networks are proposed: {' | '.join(list_strategies())} "
        "(default optuna: TPE under the predicted-latency constraint, or with --max-accuracy-drop playprune: "
        "Play and Prune's adaptive pruning rate; gates: W-Gates trained against an LPNet predictor)",
    )
    opt(p, SearchConfig, "objectives", "optuna/flops: 2 runs NSGA-II on (accuracy, predicted latency) and "
        "reports the Pareto front", choices=[1, 2])  # fmt: skip
    opt(p, SearchConfig, "prune_trials", "optuna: do not stop hopeless trials (median pruner)")
    opt(p, SearchConfig, "trials", trials_help())
    p.add_argument(
        "--storage",
        help="Optuna storage (default: a sqlite file in the run directory, one worker). Several workers "
        "share a study on postgresql://USER@HOST/DB (pip install 'autoprune[postgres]') or "
        "journal:///FILE.log (workers on one machine): together they train --trials networks",
    )
    p.add_argument(
        "--study", default="autoprune", help="Optuna study name; rerun the same one to resume, or share it"
    )
    _search_training(p)
    p.add_argument(
        "--image-size", type=int, default=32, help="images are resized to this square (default: 32)"
    )
    p.add_argument("--out", required=True, help="run directory")
    own = p.add_argument_group("strategy options (each strategy's own, from the registry)")
    for option in strategy_options().values():
        own.add_argument(
            option.flag, type=option.type, help=option.help, dest=f"strategy_{option.name}",
            metavar=option.name.upper(),
        )  # fmt: skip


def _search_training(p: Any) -> None:
    """How a search trains, scores and measures its networks (``SearchConfig``)."""
    from autoprune.search import list_criteria

    opt(
        p,
        SearchConfig,
        "finetune_epochs",
        "training per trial before evaluation (gates: the joint training's length)",
    )
    opt(p, SearchConfig, "final_epochs", "fine-tune of the chosen network")
    augment_flag(p, "the fine-tunes' batches")
    opt(p, SearchConfig, "finalists", "candidates re-measured at a time")
    opt(p, SearchConfig, "criterion", f"which channels of a group are kept: {' | '.join(list_criteria())}")
    opt(
        p,
        SearchConfig,
        "calibration_batches",
        "training batches for BatchNorm recalibration after pruning and for data-aware criteria",
    )
    opt(
        p,
        SearchConfig,
        "proxy_batches",
        "screen: the accuracy proxy re-estimates BatchNorm statistics on this many fixed train batches",
    )
    opt(p, SearchConfig, "proxy_val", "screen: the proxy scores on this many fixed validation items")
    opt(p, SearchConfig, "distill", "the final fine-tune distils from the dense model")
    opt(
        p,
        SearchConfig,
        "margin",
        "least fraction a finalist must measure under the budget (default: the protocol's tolerance)",
    )
    opt(
        p,
        SearchConfig,
        "measure_seconds",
        "finalists are judged on their ratio to the dense network timed beside them: repeats are "
        "added, up to this many seconds per batch, while a ratio's spread exceeds the margin",
    )
    opt(p, SearchConfig, "lr", "fine-tune learning rate")
    opt(p, SearchConfig, "seed", "seed of the search, the fine-tunes and the data order")
