"""The cases of ``bench_tradeoff.py`` (model, data, trained base, budget, width grid, seeds) and what each
needs before any method runs: the data extracted once, the dense base (shared or trained here, cached, its
accuracy scored once) and a latency profile with LPNet fitted on it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from _bench_record import BACKEND, PROTOCOL, stamp

from autoprune import api, training
from autoprune._io import write_json
from autoprune.config import FitConfig, SamplingConfig, TrainConfig
from autoprune.data import load_dataset
from autoprune.errors import DataError
from autoprune.models import load_model

INPUT_SHAPE = (1, 3, 32, 32)  # batch 1 everywhere


@dataclass(frozen=True)
class Case:
    """One table: ``model`` on ``data`` ("cifar10", "fmnist" or "digits"), pruned to ``ratio`` of the
    dense latency on a grid of multiples of ``round_to`` keeping at least ``min_ratio`` of each group.
    The base is the shared trained network (``base == "shared"``) or trained here for ``base_epochs``."""

    name: str
    model: str
    data: str
    ratio: float
    base: str  # "shared" (--vgg-base) or "train"
    main_seeds: bool  # all of --seeds (the headline and continuity cases) or --seeds-other of them
    base_epochs: float = 0.0
    base_augment: bool | None = None  # None: where the data suits it
    round_to: int = 8
    min_ratio: float = 0.25
    smoke: bool = False  # a tiny case for checking the script, not in the default list
    late: bool = False  # run after every seed of the other cases (its base takes hours to train)


CASES = {
    c.name: c
    for c in (
        Case("vgg11_bn-cifar10-30", "vgg11_bn", "cifar10", 0.30, "shared", main_seeds=True),
        Case("resnet20-fmnist-50", "resnet20", "fmnist", 0.50, "train", main_seeds=True, base_epochs=3),
        Case("vgg11_bn-cifar10-50", "vgg11_bn", "cifar10", 0.50, "shared", main_seeds=False),
        Case(
            "resnet56-cifar10-50",
            "resnet56",
            "cifar10",
            0.50,
            "train",
            main_seeds=False,
            base_augment=True,
            late=True,
        ),
        # For checking the script in minutes (bundled 8x8 digits): not part of the benchmark.
        Case("resnet20-digits-50", "resnet20", "digits", 0.50, "train", True, base_epochs=2, smoke=True),
        Case("vgg11_bn-digits-30", "vgg11_bn", "digits", 0.30, "train", True, base_epochs=2, smoke=True),
    )
}
DEFAULT_CASES = tuple(name for name, c in CASES.items() if not c.smoke)


@dataclass
class Prepared:
    """A case ready for its methods: the data spec, the base checkpoint and what it scored, the
    predictor, and the settings that identify them (part of every row's settings key)."""

    case: Case
    seeds: tuple[int, ...]
    data: str
    checkpoint: Path
    base: dict[str, Any]
    predictor: Path
    identity: dict[str, Any] = field(default_factory=dict)

    def dense(self) -> torch.nn.Module:
        return load_model(self.case.model, checkpoint=self.checkpoint)[0].eval()


def cifar_folder(source: Path, work: Path) -> Path:
    """CIFAR-10 as ``train/<class>`` and ``test/<class>`` folders: ``source`` itself when it is one,
    else the archive extracted once into ``work/cifar10`` (to a temporary folder first, then renamed)."""
    if source.is_dir():
        if not (source / "train").is_dir():
            raise DataError(f"--cifar10 {source}: expected train/ and test/ class folders in it")
        return source
    dest = work / "cifar10"
    if (dest / "train").is_dir():
        return dest
    work.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".cifar10-", dir=work))
    try:
        with tarfile.open(source) as tar:
            tar.extractall(tmp, filter="data")
        tops = [tmp, *(d for d in tmp.iterdir() if d.is_dir())]  # train/ at the top or one folder down
        roots = [d for d in tops if (d / "train").is_dir() and (d / "test").is_dir()]
        if not roots:
            raise DataError(f"--cifar10 {source}: the archive holds no train/ and test/ folders")
        os.replace(roots[0], dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def data_spec(case: Case, args: Any, *, build: bool = True) -> str:
    if case.data == "cifar10":
        source = Path(args.cifar10)
        if not build and not source.is_dir() and not (args.work / "cifar10" / "train").is_dir():
            raise NotBuilt
        # autoprune's imagefolder loader: train/ minus its fixed 10 % hold-out, test/ as shipped (the
        # loader and split the shared vgg11_bn base was trained with, see shared/bases/SOURCE.md)
        return f"imagefolder:{cifar_folder(Path(args.cifar10), args.work)}"
    if case.data == "fmnist":
        return f"fashion-mnist:{args.fmnist}"
    return "digits"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def base_model(
    case: Case, data: str, args: Any, log: Any, *, build: bool = True
) -> tuple[Path, dict[str, Any]]:
    """The dense base: the shared checkpoint, or trained here once (resumable per epoch); its
    validation and test accuracy scored once and cached beside it."""
    base_dir = args.work / "base"
    if case.base == "shared":
        ckpt = Path(args.vgg_base).resolve()
        meta_path = base_dir / f"{case.model}-{case.data}-shared.json"
        epochs, augment = None, None
        if not build and not meta_path.is_file():
            raise NotBuilt
    else:
        epochs = args.resnet56_epochs if case.model == "resnet56" else case.base_epochs
        augment = case.base_augment
        tag = f"{case.model}-{case.data}-e{epochs:g}" + ("" if augment is None else f"-aug{int(augment)}")
        ckpt = base_dir / f"{tag}.pt"
        meta_path = ckpt.with_suffix(".json")
        if not build and not meta_path.is_file():
            raise NotBuilt
        if not ckpt.is_file():
            log(f"training the {case.model} base on {data} for {epochs:g} epochs (augment {augment}) ...")
            start = time.perf_counter()
            api.train(case.model, data=data, out=ckpt, config=TrainConfig(epochs=epochs, augment=augment))
            write_json(ckpt.with_suffix(".train.json"), {"s": time.perf_counter() - start})
    if not meta_path.is_file():
        ds = load_dataset(data)
        net, _ = load_model(case.model, checkpoint=ckpt)
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)
        train_s = ckpt.with_suffix(".train.json")
        write_json(
            meta_path,
            {
                "checkpoint": str(ckpt),
                "sha256": _sha256(ckpt),
                "val_accuracy": training.evaluate(net, ds.val),
                "test_accuracy": training.evaluate(net, ds.test),  # the dense network's one test read
                "checkpoint_val_accuracy": saved.get("val_accuracy"),
                "checkpoint_test_accuracy": saved.get("test_accuracy"),
                "train": saved.get("train"),
                "epochs": epochs,
                "train_s": json.loads(train_s.read_text())["s"] if train_s.is_file() else None,
                **stamp({"case": case.name}),
            },
        )
    return ckpt, json.loads(meta_path.read_text())


def predictor_for(case: Case, ckpt: Path, samples: int, work: Path, log: Any, *, build: bool = True) -> Path:
    """``samples`` sub-networks profiled at batch 1 on the case's grid, LPNet fitted on them (shared by
    the cases of one model and grid)."""
    stem = (
        work / "profiles" / (f"{case.model}_bs1_r{case.round_to}_m{round(100 * case.min_ratio)}_n{samples}")
    )
    out = stem.with_suffix(".predictor.pt")
    if not build and not out.is_file():
        raise NotBuilt
    if not out.is_file():
        log(f"profiling {samples} {case.model} sub-networks and fitting LPNet ...")
        start = time.perf_counter()
        api.profile(
            case.model,
            out=stem.with_suffix(".parquet"),
            checkpoint=ckpt,
            input_shape=INPUT_SHAPE,
            backend=BACKEND[0],
            backend_options=BACKEND[1],
            sampling=SamplingConfig(samples=samples, round_to=case.round_to, min_ratio=case.min_ratio),
            protocol=PROTOCOL,
        )
        api.fit(stem.with_suffix(".parquet"), out=out, config=FitConfig(predictor="lpnet", folds=0))
        write_json(stem.with_suffix(".bench.json"), {"s": time.perf_counter() - start, **stamp({})})
    return out


def seeds_of(case: Case, args: Any) -> tuple[int, ...]:
    """All of --seeds for the headline and continuity cases, the first --seeds-other for the others."""
    return tuple(args.seeds if case.main_seeds else args.seeds[: args.seeds_other])


class NotBuilt(Exception):
    """Something a case needs is not in the cache and the caller asked not to build it."""


def prepare(case: Case, args: Any, log: Any, *, build: bool = True) -> Prepared | None:
    """The case ready for its methods, building what is missing; with ``build`` False, None when
    anything would have to be built (extracted, trained, profiled)."""
    seeds = seeds_of(case, args)
    try:
        data = data_spec(case, args, build=build)
        ckpt, base = base_model(case, data, args, log, build=build)
        predictor = predictor_for(case, ckpt, args.samples, args.work, log, build=build)
    except NotBuilt:
        return None
    identity = {
        "case": case.name,
        "data": data,
        "checkpoint": str(ckpt),
        "sha256": base["sha256"],
        "predictor": str(predictor),
        "ratio": case.ratio,
        "round_to": case.round_to,
        "min_ratio": case.min_ratio,
    }
    return Prepared(case, seeds, data, ckpt, base, predictor, identity)
