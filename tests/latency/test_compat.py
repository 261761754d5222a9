from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from autoprune.errors import ProfileError
from autoprune.latency import check_same_run, difference, mismatch
from autoprune.latency.compat import LUT_KEYS, PROFILE_KEYS

DEVICE = {"cpu": "test-cpu", "logical_cores": 2, "accelerator": None, "versions": {"torch": "2.0"}}
META: dict[str, Any] = {
    "device": DEVICE,
    "model": "resnet20",
    "grid": 3,
    "sampling": {"samples": 10, "seed": 0, "min_ratio": 0.25, "round_to": 8},
}


def test_mismatch_names_the_first_differing_key_and_the_device_first() -> None:
    assert mismatch(META, {**META, "device": {**DEVICE, "versions": {"torch": "9.9"}}}, ["device"]) is None
    other = {**META, "model": "resnet56", "grid": 4, "device": {**DEVICE, "cpu": "other"}}
    assert mismatch(META, other, ["model", "grid", "device"]) == "device"
    assert mismatch(META, {**other, "device": DEVICE}, ["grid", "model", "device"]) == "grid"
    more = {**META, "sampling": {**META["sampling"], "samples": 50}}
    assert mismatch(META, more, ["sampling.min_ratio", "sampling.round_to"]) is None
    assert mismatch(META, more, ["sampling"]) == "sampling"
    assert mismatch(META, {**META, "sampling": None}, ["sampling.round_to"]) == "sampling.round_to"
    assert "sampling.samples" not in PROFILE_KEYS and "sampling.round_to" in LUT_KEYS


def test_difference_and_check_same_run_are_one_line_with_the_fix(tmp_path: Path) -> None:
    other = {**META, "device": {**DEVICE, "cpu": "other"}}
    assert difference("device", META, other) == "another device (cpu: 'test-cpu', here 'other')"
    assert difference("grid", META, {**META, "grid": 4}) == "another grid (3, here 4)"
    assert (
        difference("groups", META, META, summarize=["groups"])
        == "another model architecture (its groups differ)"
    )
    check_same_run(META, {**META, "sampling": {**META["sampling"], "samples": 50}}, tmp_path, PROFILE_KEYS)
    with pytest.raises(ProfileError, match=r"another device \(cpu: .*: pass a new --out, or delete it"):
        check_same_run(META, other, tmp_path, ["grid", "device"])
