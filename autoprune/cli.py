"""The ``autoprune`` command: parse, call ``autoprune.api``, print. User errors: one line, exit 2."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence

from autoprune._cli_args import build_parser
from autoprune._cli_options import config_from
from autoprune._console import RichReporter, console, make_progress, say
from autoprune.errors import AutopruneError, ConfigError


def _backend_options(args: argparse.Namespace) -> dict[str, object]:
    """Only the options the user gave: each backend keeps its own defaults and refuses what it lacks."""
    given = {
        "device": args.device,
        "precision": args.precision,
        "threads": args.threads,
        "workspace_mib": args.workspace_mib,
        "cuda_graph": args.cuda_graph,
        "transfers": args.transfers or None,
    }
    return {k: v for k, v in given.items() if v is not None}


def _check_merge_args(args: argparse.Namespace) -> None:
    """``profile --merge`` joins shards and measures nothing: it takes no model and no --shard."""
    if args.model is not None:
        raise ConfigError(
            f"--merge joins measured shards and measures nothing: drop '{args.model}' (autoprune profile "
            "--merge SHARD... --out OUT.parquet), or put --merge's shards after the other options"
        )
    if args.shard is not None:
        raise ConfigError("--merge joins all the shards: drop --shard")
    if args.out is None:
        raise ConfigError("--merge writes one profile: pass --out OUT.parquet")


def _train(args: argparse.Namespace, reporter: RichReporter) -> None:
    from autoprune import api
    from autoprune.config import TrainConfig

    train_cfg = config_from(TrainConfig, args)
    r = api.train(
        args.model,
        data=args.data,
        out=args.out,
        config=train_cfg,
        image_size=args.image_size,
        reporter=reporter,
    )
    reporter.progress.stop()
    say(f"saved {r.checkpoint} (val accuracy {100 * r.val_accuracy:.2f} %)")


def _profile_merge(args: argparse.Namespace, reporter: RichReporter) -> None:
    from autoprune import api

    _check_merge_args(args)
    prof = api.merge_profiles(args.merge, out=args.out, partial=args.partial)
    reporter.progress.stop()
    merged = prof.meta["merged"]
    say(
        f"{len(prof.rows)} sub-networks from {len(merged['shards'])} of {merged['count']} shards in "
        f"{prof.path}" + (f" (partial: {merged['planned']} planned)" if merged["partial"] else "")
    )


def _profile(args: argparse.Namespace, reporter: RichReporter) -> None:
    from autoprune import api
    from autoprune.config import ProtocolConfig, SamplingConfig

    if args.model is None:
        raise ConfigError(
            "name the model to profile: autoprune profile MODEL ..., or join shards with "
            "autoprune profile --merge SHARD... --out OUT.parquet"
        )
    prof = api.profile(
        args.model,
        out=args.out,
        checkpoint=args.checkpoint,
        num_classes=args.num_classes,
        input_shape=args.input_shape,
        backend=args.backend,
        backend_options=_backend_options(args),
        sampling=config_from(SamplingConfig, args),
        protocol=config_from(ProtocolConfig, args),
        lut_grid=args.lut_grid if args.lut else None,
        active=args.active,
        budget_ms=args.budget_ms,
        active_initial=args.active_initial,
        active_batch=args.active_batch,
        shard=args.shard,
        reporter=reporter,
    )
    reporter.progress.stop()
    lat = prof.latency_ms()
    noisy = int(prof.rows["noisy"].sum())
    say(
        f"{len(prof.rows)} sub-networks in {prof.path}: {lat.min():.4f}–{lat.max():.4f} ms"
        + (f"; {noisy} flagged noisy (column 'noisy')" if noisy else "")
    )


def _fit(args: argparse.Namespace, reporter: RichReporter) -> None:
    from autoprune import api
    from autoprune.config import FitConfig
    from autoprune.report import predictor_table

    fit_cfg = config_from(FitConfig, args)
    fitted = api.fit(args.profile, out=args.out, config=fit_cfg, model=args.model, reporter=reporter)
    reporter.progress.stop()
    held = len(fitted.comparison.measured)
    console.print(
        predictor_table(
            fitted.comparison.results,
            f"latency predictors: {held} held-out networks, {fit_cfg.folds}-fold on "
            f"{fitted.rows['used']} ({fitted.rows['noisy_left_out']} flagged noisy left out)",
        )
    )
    say(f"saved {fitted.choice.kind} to {fitted.path}: {fitted.choice.reason}")
    say(f"metrics {fitted.metrics_path}, calibration plot {fitted.plot_path}")


def _search(args: argparse.Namespace, reporter: RichReporter) -> None:
    from autoprune import api
    from autoprune.config import SearchConfig
    from autoprune.report import comparison_table
    from autoprune.search import strategy_options

    predictor, targets = _first_target(args)
    search_cfg = config_from(
        SearchConfig,
        args,
        strategy_options={
            o.name: v
            for o in strategy_options().values()
            if (v := getattr(args, f"strategy_{o.name}")) is not None
        },
        targets=targets,
    )
    s = api.search(
        args.model,
        checkpoint=args.checkpoint,
        data=args.data,
        predictor=predictor,
        out=args.out,
        config=search_cfg,
        storage=args.storage,
        study=args.study,
        image_size=args.image_size,
        reporter=reporter,
    )
    reporter.progress.stop()
    console.print(comparison_table(s.dense, s.pruned, s.budget_ms, max_accuracy_drop=s.max_accuracy_drop))
    if args.objectives == 2:
        front = ", ".join(f"#{p.number} {100 * (p.accuracy or 0):.2f} % at {p.predicted_ms:.4f} ms"
                          for p in s.pareto_front)  # fmt: skip
        say(f"Pareto front (val accuracy after the short fine-tune, predicted latency): {front}")
    say(f"saved {s.run_dir / 'pruned.pt'}, {s.run_dir / 'report.md'} (plots: pareto.png, widths.png)")


def _first_target(args: argparse.Namespace) -> tuple[str, tuple[str, ...]]:
    """The predictor the search runs on and the other targets: ``--predictor`` (with its budget) and every
    ``--target``, or the first ``--target`` (its budget set on ``args``) and the rest."""
    from autoprune.config import TargetSpec

    if args.predictor is not None:
        return args.predictor, tuple(args.target)
    if not args.target:
        raise ConfigError(
            "give the device's predictor: --predictor FILE (with --budget-ms or --budget-ratio) "
            "or --target PREDICTOR:BUDGET"
        )
    if args.budget_ms is not None or args.budget_ratio is not None:
        raise ConfigError(
            "--budget-ms/--budget-ratio are --predictor's budget: give --predictor too, or put "
            "the budget in the first --target PREDICTOR:BUDGET"
        )
    first = TargetSpec.parse(args.target[0])
    args.budget_ms, args.budget_ratio = first.budget_ms, first.budget_ratio
    return first.predictor, tuple(args.target[1:])


def _adapt(args: argparse.Namespace, reporter: RichReporter) -> None:
    from autoprune import api
    from autoprune.config import AdaptConfig

    adapt_cfg = config_from(AdaptConfig, args)
    a = api.adapt(
        args.model,
        checkpoint=args.checkpoint,
        reference=args.reference,
        data=args.data,
        predictor=args.predictor,
        out=args.out,
        config=adapt_cfg,
        image_size=args.image_size,
        reporter=reporter,
    )
    reporter.progress.stop()
    meta = "reused" if a.meta_seconds == 0 else f"{a.meta_seconds:.1f} s"
    say(
        f"adapted in {a.adapt_seconds:.1f} s (meta-training {meta}): {a.measured_ms:.4f} ms "
        f"measured, {a.predicted_ms:.4f} predicted, budget {a.budget_ms:.4f} ms "
        f"(dense {a.dense_ms:.4f}); "
        f"val {100 * a.val_accuracy:.2f} %, test {100 * a.test_accuracy:.2f} %"
    )
    say(f"saved {a.run_dir / 'pruned.pt'}, {a.run_dir / 'adapt.json'}")


def _export(args: argparse.Namespace, reporter: RichReporter) -> None:
    from autoprune import api
    from autoprune.export import OnnxExport, TensorRTExport

    e = api.export(
        args.source,
        format=args.format,
        out=args.out,
        precision=args.precision,
        max_batch=args.max_batch,
        workspace_mib=args.workspace_mib,
        verify=args.verify,
        budget_ms=args.budget_ms,
        calibration_data=args.calib_data,
        calibration_batches=args.calib_batches,
        device=args.device,
    )
    reporter.progress.stop()
    line = f"wrote {e.path}; max |{args.format} - torch| = {e.max_abs_diff:.3g}"
    line += f" (tolerance {e.tolerance:.3g})"
    if isinstance(e, OnnxExport) and e.exporter != "torchscript":
        line += f" ({e.exporter} exporter: the TorchScript one cannot export an op here)"
    if isinstance(e, TensorRTExport) and e.latency is not None:
        line += f"; {e.latency.median_ms:.4f} ms measured (sidecar {e.sidecar})"
    say(line)


def _demo(args: argparse.Namespace, reporter: RichReporter) -> None:
    from autoprune import api
    from autoprune.report import comparison_table

    started = time.perf_counter()
    d = api.demo(
        args.out,
        epochs=args.epochs,
        samples=args.samples,
        trials=args.trials,
        budget_ratio=args.budget_ratio,
        finetune_epochs=args.finetune_epochs,
        final_epochs=args.final_epochs,
        strategy=args.strategy,
        reporter=reporter,
    )
    reporter.progress.stop()
    console.print(comparison_table(d.search.dense, d.search.pruned, d.search.budget_ms))
    say(
        f"run directory {d.run_dir} (report.md, pruned.pt, model.onnx); "
        f"wall time {time.perf_counter() - started:.0f} s"
    )


_COMMANDS = {
    "train": _train,
    "profile": _profile,
    "fit": _fit,
    "search": _search,
    "adapt": _adapt,
    "export": _export,
    "demo": _demo,
}


def _run(args: argparse.Namespace) -> None:
    """The subcommand, its progress bars shown while it works and stopped before its results print."""
    command = _profile_merge if args.command == "profile" and args.merge else _COMMANDS[args.command]
    with make_progress() as progress:
        command(args, RichReporter(progress))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore", module="torch_pruning")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        _run(args)
    except AutopruneError as exc:
        say(f"autoprune: error: {exc}")
        return 2
    except KeyboardInterrupt:
        say("autoprune: interrupted; rerun the same command to continue where it stopped")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
