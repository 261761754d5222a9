from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from doubles import CountingBackend

from autoprune.config import ProtocolConfig, SamplingConfig
from autoprune.errors import ProfileError
from autoprune.graph import ChannelGraph
from autoprune.latency import (
    default_profile_path,
    plan_samples,
    profile_model,
    read_profile,
)
from autoprune.models import create_model

FAST = ProtocolConfig(warmup_ms=0.0, iterations=2, min_round_ms=0.0, rounds=1)


def _profile(out, backend, samples=6, **kw):  # type: ignore[no-untyped-def]
    return profile_model(
        create_model("resnet20"),
        model_spec="resnet20",
        num_classes=10,
        input_shape=(1, 3, 32, 32),
        backend=backend,
        sampling=SamplingConfig(samples=samples, **kw),
        protocol=FAST,
        out=out,
    )


def test_profile_rows_sidecar_and_resume(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "p.parquet"
    backend = CountingBackend()
    prof = _profile(out, backend, samples=6)
    assert len(prof.rows) == 6 and backend.loaded == 7  # and the dense reference, beside every 2nd row
    assert list(prof.rows["reference_beside"]) == [True, False] * 3
    assert prof.reference_ms() == prof.latency_ms()[0]
    assert list(prof.rows["kind"][:2]) == ["dense", "narrowest"]
    meta = json.loads((tmp_path / "p.json").read_text())
    assert meta["backend"] == "counting" and meta["device"]["cpu"] == "test-cpu"
    assert meta["input_shape"] == [1, 3, 32, 32] and len(meta["groups"]) == 12
    # Dense is slowest: the double's latency follows parameters.
    assert prof.latency_ms()[0] == prof.latency_ms().max()
    assert len(meta["runs"]) == 1 and meta["runs"][0]["threads"] is None  # the double has no threads
    again = _profile(out, backend, samples=9)  # a rerun measures only the 3 new networks
    assert len(again.rows) == 9 and backend.loaded == 11
    assert len(again.meta["runs"]) == 2
    _profile(out, backend, samples=9)  # nothing new: not even the reference is loaded
    assert backend.loaded == 11
    assert again.widths()[:6] == prof.widths()


def test_profile_refuses_another_device_or_settings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "p.parquet"
    _profile(out, CountingBackend())
    with pytest.raises(ProfileError, match="another device"):
        _profile(out, CountingBackend(cpu="other-cpu"))
    with pytest.raises(ProfileError, match="another sampling"):
        _profile(out, CountingBackend(), min_ratio=0.5)


@pytest.mark.parametrize("method", ["sobol", "lhs", "uniform"])
def test_sampler_is_deterministic_distinct_rounded_and_extends(method: str) -> None:
    groups = ChannelGraph(create_model("resnet20"), torch.zeros(1, 3, 32, 32)).groups
    config = SamplingConfig(samples=60, seed=3, method=method)
    plan = plan_samples(groups, config)
    assert plan == plan_samples(groups, config)
    assert plan[:40] == plan_samples(groups, SamplingConfig(samples=40, seed=3, method=method))
    assert plan != plan_samples(groups, SamplingConfig(samples=60, seed=4, method=method))
    keys = {tuple(w.values()) for _, w in plan}
    assert len(keys) == len(plan) == 60
    for _, w in plan:
        for g in groups:
            assert 4 <= w[g.name] <= g.channels and w[g.name] % 8 == 0
    assert {k for k, _ in plan} == {"dense", "narrowest", "group-min", method, "global"}


def test_boundary_networks_alternate_with_random_ones() -> None:
    groups = ChannelGraph(create_model("resnet20"), torch.zeros(1, 3, 32, 32)).groups
    plan = plan_samples(groups, SamplingConfig(samples=40))
    dense, narrow = plan[0][1], plan[1][1]
    assert [k for k, _ in plan[:2]] == ["dense", "narrowest"]
    assert [k == "group-min" for k, _ in plan[2:8]] == [False, True] * 3
    alone = [w for k, w in plan if k == "group-min"]
    assert len(alone) == len(groups)
    for g, w in zip(groups, alone, strict=True):  # exactly this group at its narrowest
        assert {n for n in w if w[n] != dense[n]} == {g.name} and w[g.name] == narrow[g.name]
    assert "group-min" not in {k for k, _ in plan_samples(groups, SamplingConfig(samples=40, boundary=False))}


def test_low_discrepancy_samples_spread_over_the_range() -> None:
    """Sobol ratios fill [min_ratio, 1] per group more evenly than independent uniform draws do."""
    groups = ChannelGraph(create_model("resnet56"), torch.zeros(1, 3, 32, 32)).groups
    wide = [g for g in groups if g.channels == 64]

    def gaps(method: str) -> float:
        plan = plan_samples(groups, SamplingConfig(samples=200, method=method, boundary=False, round_to=1))
        worst = 0.0
        for g in wide:
            ratios = np.sort([w[g.name] / g.channels for k, w in plan if k == method])
            worst = max(worst, float(np.diff(np.r_[0.25, ratios, 1.0]).max()))
        return worst

    assert gaps("sobol") < gaps("uniform")


def test_missing_or_broken_profile(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProfileError, match="does not exist"):
        read_profile(tmp_path / "none.parquet")
    (tmp_path / "bad.parquet").write_text("not parquet")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ProfileError):
        read_profile(tmp_path / "bad.parquet")


def test_default_path_names_device_model_backend_precision_batch_and_size() -> None:
    backend = CountingBackend(cpu="Intel(R) Xeon(R) Gold 6338 @ 2.0GHz")
    path = default_profile_path(
        "latency_profiles", model="torchvision:resnet18", backend=backend, input_shape=(64, 3, 224, 224)
    )
    assert path.as_posix() == (
        "latency_profiles/intel-r-xeon-r-gold-6338-2-0ghz/torchvision-resnet18__counting__fp32__bs64__224x224.parquet"
    )


def test_rows_carry_the_protocol_flags_and_stale_temp_files_are_removed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "p.parquet"
    stale = tmp_path / ".p.parquet.abc123.tmp"
    stale.write_text("half a parquet file from a killed process")
    prof = _profile(out, CountingBackend(), samples=3)
    assert not stale.exists()
    assert {"p95_ms", "cv", "remeasured", "noisy"} <= set(prof.rows.columns)
    assert not prof.rows["noisy"].any() and (prof.rows["remeasured"] == 0).all()
    # How the timed runs ran, from the session: no CUDA graph, and enqueue time not measured on a CPU.
    assert not prof.rows["cuda_graph"].any() and prof.rows["enqueue_bound"].isna().all()
    assert prof.meta["latency_statistic"].endswith("compute only")


def _profile_command(out: Path, samples: int) -> list[str]:
    return [
        sys.executable, "-m", "autoprune", "profile", "resnet20", "--samples", str(samples),
        "--warmup-ms", "0", "--iterations", "2", "--min-round-ms", "0", "--rounds", "1", "--out", str(out),
    ]  # fmt: skip


@pytest.mark.slow
def test_sigkill_loses_at_most_the_network_in_flight(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Kill a real profiling process with SIGKILL mid-run; the rerun keeps every row and adds the rest."""
    out, samples = tmp_path / "p.parquet", 40
    proc = subprocess.Popen(_profile_command(out, samples), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    rows = 0
    while rows < 5 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        rows = len(read_profile(out).rows) if out.exists() else 0  # races the writer's renames
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and rows >= 5
    before = read_profile(out).rows  # readable: every write was atomic
    assert rows <= len(before) < samples
    subprocess.run(_profile_command(out, samples), check=True, stderr=subprocess.DEVNULL)
    after = read_profile(out).rows
    assert len(after) == samples and sorted(after["sample_id"]) == list(range(samples))
    kept = after.set_index("sample_id").loc[before["sample_id"], ["raw_ms", "reference_beside"]]
    assert np.array_equal(kept.to_numpy(), before[["raw_ms", "reference_beside"]].to_numpy())  # not again
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_format_2_profile_is_refused_with_the_command_that_remeasures_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "p.parquet"
    _profile(out, CountingBackend(), samples=3)
    side = tmp_path / "p.json"
    side.write_text(json.dumps({**json.loads(side.read_text()), "format": 2}))
    with pytest.raises(ProfileError, match="format-2 profile, measured without drift correction") as err:
        read_profile(out)
    assert "autoprune profile" in str(err.value) and len(str(err.value).splitlines()) == 1


def test_a_predictor_is_fit_without_noisy_rows_unless_most_of_the_profile_is_noisy() -> None:
    import pandas as pd

    from autoprune.latency import Profile

    def profile(noisy: list[bool]) -> Profile:
        rows = pd.DataFrame({"w:a": range(len(noisy)), "latency_ms": 1.0, "noisy": noisy})
        return Profile(path=None, meta={}, rows=rows)  # type: ignore[arg-type]

    few = profile([False, True, False, False])
    usable, note = few.for_fitting()
    assert len(usable.rows) == 3 and note is not None and "1 of 4" in note
    assert len(few.for_fitting(include_noisy=True)[0].rows) == 4
    busy = profile([True, True, True, False])  # a host busy all along: leaving them out leaves 1
    usable, note = busy.for_fitting()
    assert len(usable.rows) == 4 and note is not None and "busy" in note
    assert profile([False, False]).for_fitting()[1] is None
