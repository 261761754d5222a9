"""``autoprune train``: augmentation where the data suits it, and a run killed after an epoch resumed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from autoprune import api
from autoprune.api._train import state_path
from autoprune.config import TrainConfig
from autoprune.errors import ConfigError

QUICK = ["resnet20", "--data", "digits", "--image-size", "8"]  # an epoch of 8x8 digits takes a second


def _cli(args: list[str], kill_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AUTOPRUNE_TEST_KILL_AT"}
    if kill_at is not None:
        env["AUTOPRUNE_TEST_KILL_AT"] = kill_at
    return subprocess.run(
        [sys.executable, "-m", "autoprune", *args], capture_output=True, text=True, timeout=600, env=env
    )


def _checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_a_train_killed_after_an_epoch_resumes_and_ends_as_an_uninterrupted_one(tmp_path: Path) -> None:
    out = tmp_path / "dense.pt"
    args = ["train", *QUICK, "--epochs", "2", "--augment", "--out", str(out)]
    killed = _cli(args, kill_at="train:epoch@1")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert state_path(out).is_file() and not out.exists()
    assert state_path(out).name == "dense.pt.state.pt"
    resumed = _cli(args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not state_path(out).exists()  # removed once the checkpoint is written

    whole = tmp_path / "whole.pt"
    api.train("resnet20", data="digits", out=whole, config=TrainConfig(epochs=2, augment=True), image_size=8)
    a, b = _checkpoint(out), _checkpoint(whole)
    assert a["train"] == b["train"] and a["train"]["augment"] is True
    for name, tensor in b["state_dict"].items():
        torch.testing.assert_close(a["state_dict"][name], tensor, msg=name)


def test_the_checkpoint_records_augment_as_resolved_for_the_data(tmp_path: Path) -> None:
    out = tmp_path / "dense.pt"
    api.train("resnet20", data="digits", out=out, config=TrainConfig(epochs=0.25), image_size=8)
    recorded = _checkpoint(out)["train"]
    assert recorded["augment"] is False  # digits: a flipped or shifted digit is not the same digit
    assert recorded["epochs"] == 0.25
    assert not state_path(out).exists()  # no complete epoch: never written


def test_a_rerun_with_other_settings_is_refused_while_the_state_is_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "dense.pt"

    class Killed(Exception):
        pass

    def kill(name: str) -> None:
        if name == "train:epoch":
            raise Killed

    monkeypatch.setattr("autoprune.api._train.kill_point", kill)
    with pytest.raises(Killed):
        api.train("resnet20", data="digits", out=out, config=TrainConfig(epochs=2), image_size=8)
    with pytest.raises(ConfigError, match="new --out, or delete"):
        api.train("resnet20", data="digits", out=out, config=TrainConfig(epochs=3), image_size=8)
