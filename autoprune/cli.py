"""The ``autoprune`` command: parse, call ``autoprune.api``, print. User errors: one line, exit 2."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence

from rich.table import Table

from autoprune import __version__
from autoprune._console import RichReporter, console, make_progress
from autoprune.errors import AutopruneError


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
    parser = argparse.ArgumentParser(prog="autoprune", description=__doc__)
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
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--out", required=True, help="checkpoint file to write")

    p = sub.add_parser("profile", help="measure the latency of sampled sub-networks")
    p.add_argument("model")
    p.add_argument("--checkpoint", help="trained weights (latency does not depend on them)")
    p.add_argument(
        "--num-classes", type=int, help="classifier outputs (default: from the checkpoint, else 10)"
    )
    p.add_argument("--input-shape", type=_shape, default=(1, 3, 32, 32), help="BxCxHxW, e.g. 1x3x32x32")
    p.add_argument("--backend", default="onnxruntime", help="onnxruntime | torch")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of the backend")
    p.add_argument(
        "--samples", type=int, default=100, help="sub-networks to measure (dense and narrowest included)"
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
    p.add_argument("--out", required=True, help="PROFILE.parquet (its JSON sidecar is written beside it)")

    p = sub.add_parser("fit", help="train the latency predictor (LPNet) on a profile")
    p.add_argument("profile")
    p.add_argument("--epochs", type=int, default=1500)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--holdout", type=float, default=0.2, help="share of networks held out for the metrics")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="predictor file to write")

    p = sub.add_parser("search", help="search per-group widths under a latency budget")
    p.add_argument("model")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--predictor", required=True)
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--budget-ms", type=float, help="latency budget in milliseconds")
    budget.add_argument(
        "--budget-ratio", type=float, help="budget as a fraction of the dense latency measured now"
    )
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite file in the run directory)")
    p.add_argument("--study", default="autoprune", help="Optuna study name; rerun the same one to resume")
    p.add_argument("--finetune-epochs", type=float, default=1.0, help="fine-tune per trial before evaluation")
    p.add_argument("--final-epochs", type=int, default=5, help="fine-tune of the chosen network")
    p.add_argument("--finalists", type=int, default=3, help="candidates re-measured at a time")
    p.add_argument("--criterion", default="l1", help="importance criterion: l1 | l2 | random")
    p.add_argument("--lr", type=float, default=0.05, help="fine-tune learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--out", required=True, help="run directory")

    p = sub.add_parser("export", help="export a pruned network")
    p.add_argument("source", help="a run directory or its pruned.pt")
    p.add_argument("--format", default="onnx", help="onnx")
    p.add_argument("--out", help="file to write (default: model.onnx beside pruned.pt)")

    p = sub.add_parser("demo", help="the whole pipeline on the embedded default, on the CPU")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--trials", type=int, default=24)
    p.add_argument("--budget-ratio", type=float, default=0.6)
    p.add_argument("--finetune-epochs", type=float, default=1.0)
    p.add_argument("--final-epochs", type=int, default=5)
    return parser


def _run(args: argparse.Namespace) -> None:
    from autoprune import api
    from autoprune.config import FitConfig, ProtocolConfig, SamplingConfig, SearchConfig, TrainConfig
    from autoprune.report import comparison_table

    started = time.perf_counter()
    with make_progress() as progress:
        reporter = RichReporter(progress)
        if args.command == "train":
            train_cfg = TrainConfig(
                epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed
            )
            r = api.train(
                args.model,
                data=args.data,
                out=args.out,
                config=train_cfg,
                image_size=args.image_size,
                reporter=reporter,
            )
            progress.stop()
            console.print(f"saved {r.checkpoint} (val accuracy {100 * r.val_accuracy:.2f} %)")
        elif args.command == "profile":
            prof = api.profile(
                args.model,
                out=args.out,
                checkpoint=args.checkpoint,
                num_classes=args.num_classes,
                input_shape=args.input_shape,
                backend=args.backend,
                threads=args.threads,
                sampling=SamplingConfig(
                    samples=args.samples, seed=args.seed, min_ratio=args.min_ratio, round_to=args.round_to
                ),
                protocol=ProtocolConfig(
                    warmup_ms=args.warmup_ms,
                    iterations=args.iterations,
                    rounds=args.rounds,
                    min_round_ms=args.min_round_ms,
                ),
                reporter=reporter,
            )
            progress.stop()
            lat = prof.latency_ms()
            console.print(f"{len(prof.rows)} sub-networks in {prof.path}: {lat.min():.4f}–{lat.max():.4f} ms")
        elif args.command == "fit":
            fit_cfg = FitConfig(epochs=args.epochs, hidden=args.hidden, holdout=args.holdout, seed=args.seed)
            fitted = api.fit(args.profile, out=args.out, config=fit_cfg)
            progress.stop()
            console.print(_metrics_table(fitted.metrics))
            console.print(f"saved {fitted.path}")
        elif args.command == "search":
            search_cfg = SearchConfig(
                budget_ms=args.budget_ms,
                budget_ratio=args.budget_ratio,
                trials=args.trials,
                finetune_epochs=args.finetune_epochs,
                final_epochs=args.final_epochs,
                finalists=args.finalists,
                criterion=args.criterion,
                lr=args.lr,
                seed=args.seed,
            )
            s = api.search(
                args.model,
                checkpoint=args.checkpoint,
                data=args.data,
                predictor=args.predictor,
                out=args.out,
                config=search_cfg,
                storage=args.storage,
                study=args.study,
                image_size=args.image_size,
                reporter=reporter,
            )
            progress.stop()
            console.print(comparison_table(s.dense, s.pruned, s.budget_ms))
            console.print(f"saved {s.run_dir / 'pruned.pt'} and {s.run_dir / 'report.md'}")
        elif args.command == "export":
            e = api.export(args.source, format=args.format, out=args.out)
            progress.stop()
            console.print(
                f"wrote {e.path}; max |onnxruntime - torch| = {e.max_abs_diff:.3g} "
                f"(tolerance {e.tolerance:.3g})"
            )
        elif args.command == "demo":
            d = api.demo(
                args.out,
                epochs=args.epochs,
                samples=args.samples,
                trials=args.trials,
                budget_ratio=args.budget_ratio,
                finetune_epochs=args.finetune_epochs,
                final_epochs=args.final_epochs,
                reporter=reporter,
            )
            progress.stop()
            console.print(comparison_table(d.search.dense, d.search.pruned, d.search.budget_ms))
            console.print(
                f"run directory {d.run_dir} (report.md, pruned.pt, model.onnx); "
                f"wall time {time.perf_counter() - started:.0f} s"
            )


def _metrics_table(metrics: dict[str, dict[str, float]]) -> Table:
    table = Table(title="latency predictors on held-out sub-networks")
    for name in ("predictor", "MAPE %", "within ±10 %", "RMSE ms", "Kendall τ", "n"):
        table.add_column(name, justify="right")
    for name, m in metrics.items():
        table.add_row(
            name,
            f"{m['mape']:.2f}",
            f"{m['within_10']:.0f} %",
            f"{m['rmse_ms']:.4f}",
            f"{m['kendall_tau']:.3f}",
            str(m["n"]),
        )
    return table


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore", module="torch_pruning")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        _run(args)
    except AutopruneError as exc:
        console.print(f"autoprune: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("autoprune: interrupted; rerun the same command to continue where it stopped")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
