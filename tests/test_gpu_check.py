"""scripts/gpu_check.sh --dry-run: the GPU check script's steps, on the CPU with tiny sizes, so that the
script keeps working between runs on a GPU machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STEPS = [
    "install",
    "pytest_gpu",
    "train",
    "profile_resnet20_bs1",
    "profile_resnet20_bs1_nograph",
    "profile_resnet20_bs32",
    "profile_mobilenet_v2_bs1",
    "profile_mobilenet_v2_bs32",
    "flags",
    "fit_resnet20_bs1",
    "fit_resnet20_bs32",
    "fit_mobilenet_v2_bs1",
    "fit_mobilenet_v2_bs32",
    "search",
    "remeasure",
]


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # This interpreter's environment first on PATH: the script calls `python` and `autoprune`.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    rows = [line.split("\t") for line in (out / "summary.tsv").read_text().splitlines()[1:]]
    codes = {row[0]: row[1] for row in rows if not row[0].startswith("#")}
    assert list(codes) == STEPS
    assert all(code == "0" for code in codes.values()), codes
    for name in (
        "resnet20_bs1",
        "resnet20_bs1_nograph",
        "resnet20_bs32",
        "mobilenet_v2_bs1",
        "mobilenet_v2_bs32",
    ):
        assert (out / "profiles" / f"{name}.parquet").is_file()
    for name in ("resnet20_bs1", "resnet20_bs32", "mobilenet_v2_bs1", "mobilenet_v2_bs32"):
        assert (out / "predictors" / f"{name}.pt").is_file()
        assert (out / "predictors" / f"{name}.json").is_file()
    assert (out / "search" / "search.json").is_file()
    assert "enqueue_bound" in (out / "flags.txt").read_text()
    assert (out / "remeasure.json").is_file()
