"""The command line: the demo end to end, and every input a user can get wrong (exit 2, one line)."""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from cli_checks import fails_in_one_line as _fails

from autoprune.cli import _backend_options, build_parser, main
from autoprune.graph import ChannelGraph, narrowest_widths
from autoprune.latency import lut_path, read_lut, read_profile
from autoprune.models import create_model, save_checkpoint
from autoprune.prune import prune_model, save_pruned
from autoprune.search.study import trained


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autoprune", *args], capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_demo_end_to_end_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    tiny = [
        "--epochs",
        "0.5",
        "--samples",
        "16",
        "--finetune-epochs",
        "0.1",
        "--final-epochs",
        "0.2",
        "--budget-ratio",
        "0.9",  # 16 networks (noisy ones left out) predict roughly: leave the finalists room
    ]
    first = run_cli("demo", "--out", str(out), "--trials", "4", *tiny)
    assert first.returncode == 0, first.stderr[-3000:]
    for name in (
        "dense.pt",
        "profile.parquet",
        "profile.json",
        "predictor.pt",
        "study.db",
        "pruned.pt",
        "model.onnx",
        "report.md",
    ):
        assert (out / name).is_file(), name
    assert "wall time" in first.stderr
    summary = json.loads((out / "search.json").read_text())
    assert summary["pruned"]["latency_ms"] <= summary["budget_ms"]  # met by measurement
    report = (out / "report.md").read_text()
    assert "| pruned |" in report and "| budget met |" in report
    # A rerun with more trials keeps the trained network, the profile's measurements (no sub-network is
    # measured twice) and the study's trials; it fits, selects and fine-tunes again (README).
    profiled = len(pd.read_parquet(out / "profile.parquet"))
    trained_at = (out / "dense.pt").stat().st_mtime_ns
    second = run_cli("demo", "--out", str(out), "--trials", "5", *tiny)
    assert second.returncode == 0, second.stderr[-3000:]
    study = optuna.load_study(study_name="autoprune", storage=f"sqlite:///{out / 'study.db'}")
    # --trials counts trained networks; proposals the predictor puts over the budget are kept untrained
    assert trained(study) == 5 and len(study.trials) >= 5
    assert len(pd.read_parquet(out / "profile.parquet")) == profiled
    assert (out / "dense.pt").stat().st_mtime_ns == trained_at
    assert json.loads((out / "profile.json").read_text())["sampling"]["samples"] == 16


def test_bad_inputs_exit_2_with_one_line(
    tiny_run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt, prof, pred = (str(tiny_run[k]) for k in ("checkpoint", "profile", "predictor"))
    search = [
        "search",
        "resnet20",
        "--checkpoint",
        ckpt,
        "--data",
        "digits",
        "--predictor",
        pred,
        "--trials",
        "1",
        "--out",
        str(tmp_path / "s"),
    ]
    _fails(
        capsys, ["profile", "nosuchnet", "--out", str(tmp_path / "p.parquet")], "unknown model 'nosuchnet'"
    )
    _fails(
        capsys,
        ["profile", "resnet20", "--input-shape", "1x1x32x32", "--out", str(tmp_path / "p.parquet")],
        "pass a matching --input-shape",
    )
    _fails(
        capsys,
        ["profile", "resnet20", "--backend", "nope", "--out", str(tmp_path / "p.parquet")],
        "unknown latency backend",
    )
    _fails(capsys, ["train", "resnet20", "--data", "nosuch", "--out", str(tmp_path / "c.pt")], "nosuch")
    _fails(
        capsys,
        ["train", "resnet20", "--data", f"mnist:{tmp_path / 'none'}", "--out", str(tmp_path / "c.pt")],
        "does not exist",
    )
    _fails(
        capsys,
        ["fit", str(tmp_path / "none.parquet"), "--out", str(tmp_path / "x.pt")],
        "run autoprune profile",
    )
    _fails(
        capsys,
        [*search[:3], str(tmp_path / "none.pt"), *search[4:], "--budget-ratio", "0.7"],
        "pass --checkpoint FILE",
    )
    _fails(capsys, [*search, "--budget-ms", "0.00001"], "below the fastest network")
    _fails(
        capsys,
        [*search[:-2], "--out", str(tmp_path / "s2"), "--budget-ratio", "0.7", "--criterion", "nope"],
        "unknown importance criterion",
    )
    _fails(
        capsys,
        [*search[:-2], "--out", str(tmp_path / "s3"), "--budget-ratio", "0.7", "--fallbacks", "1"],
        "--fallbacks is an option of --strategy droppruning or gates or halp or knapsack or screen "
        "or uniform, not of 'optuna'",
    )
    assert not (tmp_path / "s3").exists()
    pfp = [*search[:-2], "--out", str(tmp_path / "s5"), "--budget-ratio", "0.7", "--pfp-eps"]
    _fails(capsys, [*pfp, "-1", "--strategy", "pfp"], "--pfp-eps -1.0: the error tolerance must be")
    _fails(capsys, [*pfp, "0.5"], "--pfp-eps is an option of --strategy pfp, not of 'optuna'")
    assert not (tmp_path / "s5").exists()
    # --target: its spelling, and the first target standing for --predictor and its budget.
    no_predictor = [*search[:6], *search[8:-2], "--out", str(tmp_path / "s6")]
    _fails(capsys, no_predictor, "give the device's predictor: --predictor FILE")
    _fails(capsys, [*no_predictor, "--target", pred], "write PREDICTOR:BUDGET")
    _fails(capsys, [*no_predictor, "--target", f"{pred}:0.5"], "write PREDICTOR:BUDGET")
    _fails(capsys, [*no_predictor, "--target", f"{pred}:150%"], "must be in (0 %, 100 %]")
    _fails(capsys, [*no_predictor, "--target", f"{pred}:50%", "--budget-ms", "1"], "give --predictor too")
    _fails(capsys, [*no_predictor, "--target", f"{pred}:0.00001ms"], "below the fastest network")
    _fails(
        capsys, [*no_predictor, "--target", f"{pred}:90%", "--target", f"{pred}:0.00001ms"],
        "--target " + pred + ":1e-05ms: budget 1e-05 ms is below the fastest network",
    )  # fmt: skip
    _fails(capsys, ["export", str(tmp_path / "nothing")], "does not exist")
    _fails(capsys, ["export", str(tmp_path / "nothing"), "--format", "tensorrt"], "does not exist")

    # A checkpoint of another architecture, and a predictor bound to another model.
    vgg = tmp_path / "vgg.pt"
    save_checkpoint(vgg, create_model("vgg11_bn"), model="vgg11_bn", num_classes=10)
    _fails(
        capsys,
        ["profile", "resnet20", "--checkpoint", str(vgg), "--out", str(tmp_path / "p.parquet")],
        "does not fit this model",
    )
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    _fails(
        capsys,
        ["profile", "resnet20", "--checkpoint", str(junk), "--out", str(tmp_path / "p.parquet")],
        "is not a state dict loadable with weights_only=True",
    )
    code = main(["profile", "resnet56", "--checkpoint", str(vgg), "--out", str(tmp_path / "p.parquet")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "does not fit this model" in err and len(err) < 500, err  # not every missing key
    _fails(
        capsys,
        [
            "search",
            "vgg11_bn",
            "--checkpoint",
            str(vgg),
            "--data",
            "digits",
            "--predictor",
            pred,
            "--budget-ratio",
            "0.7",
            "--out",
            str(tmp_path / "s3"),
        ],
        "profile and fit this model first",
    )

    # A predictor (and a profile) measured on another device.
    payload = torch.load(pred, weights_only=True)
    payload["meta"]["device"]["cpu"] = "Some Other CPU"
    foreign = tmp_path / "foreign.pt"
    torch.save(payload, foreign)
    _fails(
        capsys,
        [*search[:7], str(foreign), *search[8:-2], "--out", str(tmp_path / "s4"), "--budget-ratio", "0.7"],
        "another device",
    )
    side = json.loads(Path(prof).with_suffix(".json").read_text())
    side["device"]["cpu"] = "Some Other CPU"
    copy = tmp_path / "copy.parquet"
    copy.write_bytes(Path(prof).read_bytes())
    copy.with_suffix(".json").write_text(json.dumps(side))
    _fails(capsys, ["profile", "resnet20", "--samples", "12", "--out", str(copy)], "another device")


def test_a_bad_strategy_option_exits_2_with_one_line_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s"
    search = ["search", "resnet20", "--checkpoint", str(tmp_path / "none.pt"), "--data", "digits",
              "--predictor", str(tmp_path / "none.pt"), "--budget-ratio", "0.7", "--out", str(out),
              "--strategy", "droppruning"]  # fmt: skip
    _fails(capsys, [*search, "--drop-in", "1.5"], "droppruning: --drop-in must be in [0, 1), got 1.5")
    _fails(capsys, [*search, "--drop-steps", "0"], "droppruning: --drop-steps must be >= 1")
    assert not out.exists()


def test_storage_folds_and_lut_grid_are_checked_before_any_work(
    tiny_run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt, prof, pred = (str(tiny_run[k]) for k in ("checkpoint", "profile", "predictor"))
    out = tmp_path / "s"
    search = ["search", "resnet20", "--checkpoint", ckpt, "--data", "digits", "--predictor", pred,
              "--budget-ratio", "0.7", "--trials", "1", "--out", str(out)]  # fmt: skip
    _fails(capsys, [*search, "--storage", "badscheme://x"], "is not a storage URL autoprune can use")
    _fails(capsys, [*search, "--storage", "not a url"], "pass sqlite:///FILE.db or postgresql://")
    missing = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"
    _fails(capsys, [*search, "--storage", missing], "cannot be opened")
    # Without the driver the fix is the extra; with it, port 1 has no server.
    has_driver = importlib.util.find_spec("psycopg2") is not None
    expected = "cannot be opened" if has_driver else 'pip install "autoprune[postgres]"'
    _fails(capsys, [*search, "--storage", "postgresql://user@127.0.0.1:1/db"], expected)
    assert not out.exists()  # refused before the run directory was written
    fit = ["fit", prof, "--out", str(tmp_path / "p.pt"), "--folds", "1000"]
    _fails(capsys, fit, "--folds 1000 is more than")
    assert not (tmp_path / "p.pt").exists()
    lut = ["profile", "resnet20", "--samples", "4", "--lut", "--lut-grid", "1",
           "--out", str(tmp_path / "l.parquet")]  # fmt: skip
    _fails(capsys, [*lut, *FAST], "--lut-grid must be >= 2")
    assert not (tmp_path / "l.parquet").exists()  # no network was measured first


def test_argument_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["profile", "resnet20", "--input-shape", "1x3x32", "--out", "x.parquet"])
    assert exc.value.code == 2
    assert "not a shape like 1x3x32x32" in capsys.readouterr().err


FAST = ["--warmup-ms", "0", "--iterations", "2", "--min-round-ms", "0", "--rounds", "1"]


def test_profile_names_its_file_measures_a_lookup_table_and_refuses_other_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["profile", "resnet20", "--samples", "4", "--lut", "--lut-grid", "2", *FAST]) == 0
    capsys.readouterr()
    (found,) = (tmp_path / "latency_profiles").glob("*/resnet20__onnxruntime__fp32__bs1__32x32.parquet")
    assert len(read_profile(found).rows) == 4
    table = read_lut(lut_path(found))
    # Every layer was measured on the grid (which layer is faster is timing, not for an assertion).
    assert set(table.rows["layer"]) == {layer.name for layer in table.layers}
    assert all(0 < table.estimate(w) < float("inf") for w in read_profile(found).widths())
    _fails(
        capsys, ["profile", "resnet20", "--samples", "4", "--threads", "2", *FAST], "another backend_settings"
    )


def test_gpu_and_tensorrt_requests_fail_with_the_fix_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ["--out", str(tmp_path / "p.parquet")]
    if not torch.cuda.is_available():
        _fails(
            capsys, ["profile", "resnet20", "--backend", "torch", "--device", "cuda", *out], "--device cpu"
        )
    if importlib.util.find_spec("tensorrt") is None:
        _fails(capsys, ["profile", "resnet20", "--backend", "tensorrt", *out], "autoprune[tensorrt]")
    _fails(capsys, ["profile", "resnet20", "--method", "halton", *out], "unknown sampling method 'halton'")
    # A pruned network from a search that measured with onnxruntime.
    dense = create_model("resnet20")
    groups = ChannelGraph(copy.deepcopy(dense), torch.zeros(1, 3, 32, 32)).groups
    pruned = prune_model(
        dense,
        widths=narrowest_widths(groups, min_ratio=0.25),
        model_spec="resnet20",
        num_classes=10,
        input_shape=[1, 3, 32, 32],
    )
    pruned.meta = {"backend": "onnxruntime", "precision": "fp32", "budget_ms": 0.3}
    save_pruned(tmp_path / "run" / "pruned.pt", pruned)
    run = str(tmp_path / "run")
    _fails(capsys, ["export", run, "--format", "tensorrt", "--verify"], "pass --budget-ms")
    if importlib.util.find_spec("tensorrt") is None:
        _fails(capsys, ["export", run, "--format", "tensorrt", "--precision", "fp16"], "autoprune[tensorrt]")
    _fails(capsys, ["export", run, "--format", "tensorrt", "--calib-data", "digits"], "--precision int8")
    assert not list((tmp_path / "run").glob("*.engine"))


def test_cuda_graph_flag_is_left_to_the_backend_unless_given() -> None:
    """No flag: each backend's default (a graph on CUDA, not applicable on the CPU, so no error there)."""

    def options(*flags: str) -> dict[str, object]:
        return _backend_options(build_parser().parse_args(["profile", "resnet20", *flags]))

    assert "cuda_graph" not in options()
    assert options("--cuda-graph")["cuda_graph"] is True
    assert options("--no-cuda-graph")["cuda_graph"] is False


def test_fit_compares_predictors_and_writes_table_metrics_and_plot(
    tiny_run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pred.pt"
    args = ["fit", str(tiny_run["profile"]), "--out", str(out), "--include-noisy", "--folds", "2"]
    lpnet = ["--predictor", "lpnet", "--epochs", "60", "--members", "2"]
    assert main([*args, *lpnet, "--compare", "flops", "ridge"]) == 0
    err = capsys.readouterr().err
    # One row per predictor (the header's layout depends on the terminal; tests/report/test_tables.py).
    assert all(kind in err for kind in ("lpnet", "flops", "ridge")), err
    metrics = json.loads(out.with_suffix(".json").read_text())
    assert metrics["chosen"] == "lpnet" and set(metrics["predictors"]) == {"lpnet", "flops", "ridge"}
    assert metrics["reason"].startswith("asked for (auto would save") and metrics["reason"] in " ".join(
        err.split()
    )
    assert metrics["predictors"]["flops"]["kfold"]["n"] == metrics["rows"]["used"]
    assert out.with_suffix(".calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # By default the most accurate by k-fold is saved, and the output says which and why.
    assert main([*args, "--compare", "flops", "ridge"]) == 0
    err = capsys.readouterr().err
    metrics = json.loads(out.with_suffix(".json").read_text())
    within = {k: r["kfold"]["within_10"] for k, r in metrics["predictors"].items()}
    assert within[metrics["chosen"]] == max(within.values()) and metrics["chosen_by"] == "kfold"
    assert f"saved {metrics['chosen']} to {out}: {metrics['reason']}" in " ".join(err.split())
    _fails(capsys, [*args, "--predictor", "lut"], "needs the profile's lookup table")
    _fails(capsys, [*args, "--predictor", "nope"], "unknown predictor 'nope': use auto or one of lpnet")
    _fails(
        capsys, ["profile", "resnet20", "--budget-ms", "1", "--out", str(tmp_path / "p.parquet")], "--active"
    )
    assert main([*args, "--predictor", "flops", "--folds", "0", "--compare", "flops"]) == 0
    capsys.readouterr()
    search = ["search", "resnet20", "--checkpoint", str(tiny_run["checkpoint"]), "--data", "digits"]
    _fails(
        capsys,
        [
            *search,
            "--predictor",
            str(out),
            "--budget-ratio",
            "0.9",
            "--budget-confidence",
            "0.95",
            "--out",
            str(tmp_path / "s"),
        ],
        "a 0.95 bound needs >= 19 networks to calibrate on, the predictor was fit on 12",
    )
    _fails(
        capsys,
        [
            *search,
            "--predictor",
            str(tiny_run["predictor"]),
            "--budget-ratio",
            "0.9",
            "--budget-confidence",
            "1.5",
            "--out",
            str(tmp_path / "s"),
        ],
        "--budget-confidence must be in",
    )


def _digit_folder(root: Path, classes: tuple[int, ...], per_class: int) -> Path:
    """An imagefolder dataset of some of scikit-learn's digits (8x8 PNGs): a target with new classes."""
    from PIL import Image
    from sklearn.datasets import load_digits

    bunch = load_digits()
    for c in classes:
        folder = root / "train" / str(c)
        folder.mkdir(parents=True)
        images = bunch.images[bunch.target == c][:per_class]
        for i, image in enumerate(images):
            Image.fromarray((image * 255 / 16).astype("uint8")).save(folder / f"{i}.png")
    return root


def test_adapt_refuses_bad_settings_in_one_line(
    tiny_run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt, pred = str(tiny_run["checkpoint"]), str(tiny_run["predictor"])
    adapt = ["adapt", "resnet20", "--checkpoint", ckpt, "--reference", "digits",
             "--data", "digits", "--predictor", pred, "--out", str(tmp_path / "a")]  # fmt: skip
    _fails(capsys, [*adapt, "--budget-ratio", "1.5"], "--budget-ratio must be in (0, 1]")
    _fails(
        capsys, [*adapt, "--budget-ratio", "0.9", "--subset-classes", "1"], "--subset-classes must be >= 2"
    )
    _fails(capsys, [*adapt, "--budget-ratio", "0.9", "--subset-classes", "11"], "pass at most 10")
    _fails(capsys, [*adapt[:7], "nosuch", *adapt[8:], "--budget-ratio", "0.9"], "nosuch")


@pytest.mark.slow
def test_adapt_end_to_end_to_new_classes_and_a_rerun_reuses_the_generator(
    tiny_run: dict[str, Path], tmp_path: Path
) -> None:
    from autoprune import api
    from autoprune.config import FitConfig
    from autoprune.prune import load_pruned

    lpnet = tmp_path / "lpnet.pt"
    api.fit(
        tiny_run["profile"],
        out=lpnet,
        config=FitConfig(predictor="lpnet", epochs=300, folds=0, include_noisy=True),
    )
    target = _digit_folder(tmp_path / "target", classes=(7, 8, 9), per_class=30)
    out = tmp_path / "adapt"
    args = ["adapt", "resnet20", "--checkpoint", str(tiny_run["checkpoint"]), "--reference", "digits",
            "--data", f"imagefolder:{target}", "--predictor", str(lpnet), "--budget-ratio", "0.9",
            "--meta-steps", "3", "--adapt-steps", "2", "--set-size", "16", "--query-size", "16",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((out / "adapt.json").read_text())
    assert summary["replaced_classifier"] and not summary["reused_generator"]
    assert summary["measured_ms"] <= summary["budget_ms"] and summary["predicted_ms"] <= summary["budget_ms"]
    pruned = load_pruned(out / "pruned.pt")
    assert pruned.num_classes == 3 and pruned.widths == summary["widths"]
    assert pruned.module(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
    assert main(args) == 0  # the same command again: the meta-trained generator is reused
    again = json.loads((out / "adapt.json").read_text())
    assert again["reused_generator"] and again["meta_seconds"] == 0


# ---------------------------------------------------------------- train: augmentation, fractions, resume


def test_train_takes_fractional_epochs_and_records_augment(tmp_path: Path) -> None:
    out = tmp_path / "dense.pt"
    args = ["train", "resnet20", "--image-size", "8", "--epochs", "0.5", "--out", str(out)]
    assert main([*args, "--augment"]) == 0
    recorded = torch.load(out, weights_only=True)["train"]
    assert recorded["epochs"] == 0.5 and recorded["augment"] is True
    assert main(args) == 0
    assert torch.load(out, weights_only=True)["train"]["augment"] is False  # digits: off by default


def test_train_refuses_a_rerun_with_other_settings_in_one_line_and_resumes_the_same(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "dense.pt"
    args = ["train", "resnet20", "--image-size", "8", "--epochs", "2", "--out", str(out)]

    class Killed(BaseException):  # not an AutopruneError: gets past the CLI like a kill
        pass

    def kill(name: str) -> None:
        if name == "train:epoch":
            raise Killed

    with monkeypatch.context() as m:
        m.setattr("autoprune.api._train.kill_point", kill)
        with pytest.raises(Killed):
            main(args)
    capsys.readouterr()  # the killed run's progress bar
    state = tmp_path / "dense.pt.state.pt"
    assert state.is_file() and not out.exists()
    _fails(capsys, [*args, "--augment"], "pass a new --out, or delete")
    _fails(capsys, [*args, "--lr", "0.1"], str(state))
    assert main([*args, "--no-augment"]) == 0  # what the default resolves to on digits: the same run
    assert out.is_file() and not state.exists()


def test_augment_flags_reach_the_search_and_fractions_the_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    from autoprune import api
    from autoprune.config import SearchConfig

    parser = build_parser()
    demo = parser.parse_args(["demo", "--epochs", "0.5", "--final-epochs", "0.5"])
    assert (demo.epochs, demo.final_epochs) == (0.5, 0.5)
    assert parser.parse_args(["train", "resnet20", "--out", "x.pt"]).augment is None
    seen: list[SearchConfig] = []

    class Stop(Exception):
        pass

    def search(*args: object, config: SearchConfig, **kwargs: object) -> None:
        seen.append(config)
        raise Stop

    monkeypatch.setattr(api, "search", search)
    base = ["search", "resnet20", "--checkpoint", "c.pt", "--data", "digits", "--predictor", "p.pt"]
    base += ["--budget-ratio", "0.5"]
    for flag, expected in (([], None), (["--augment"], True), (["--no-augment"], False)):
        with pytest.raises(Stop):
            main([*base, *flag, "--out", "run"])
        assert seen[-1].augment is expected
