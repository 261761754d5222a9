"""Profiling in shards (``--shard I/N``) and joining them (``--merge``): disjoint parts of one plan whose
merge is the unsharded profile, refused when measured on another device or incomplete, resumable."""

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
from cli_checks import fails_in_one_line as _fails
from doubles import CountingBackend, SlowedBackend

from autoprune import api
from autoprune.cli import main
from autoprune.config import FitConfig, ProtocolConfig, SamplingConfig
from autoprune.errors import ConfigError, ProfileError
from autoprune.latency import Profile, Shard, merge_profiles, profile_model, read_profile
from autoprune.models import create_model

FAST = ProtocolConfig(warmup_ms=0.0, iterations=2, min_round_ms=0.0, rounds=1)
FAST_FLAGS = ["--warmup-ms", "0", "--iterations", "2", "--min-round-ms", "0", "--rounds", "1"]


def _profile(out: Path, backend: CountingBackend, *, samples: int = 8, shard: Shard | None = None,
             **kw: object) -> Profile:  # fmt: skip
    return profile_model(
        create_model("resnet20"),
        model_spec="resnet20",
        num_classes=10,
        input_shape=(1, 3, 32, 32),
        backend=backend,
        sampling=SamplingConfig(samples=samples),
        protocol=FAST,
        out=out,
        shard=shard,
        **kw,  # type: ignore[arg-type]
    )


def _keys(prof: Profile) -> set[tuple[int, ...]]:
    return {tuple(w.values()) for w in prof.widths()}


@pytest.mark.parametrize("count", [2, 3])
def test_shards_are_disjoint_and_merge_into_the_unsharded_profile(tmp_path: Path, count: int) -> None:
    whole = _profile(tmp_path / "whole.parquet", CountingBackend())
    backend = CountingBackend()
    shards = [
        _profile(tmp_path / f"s{i}.parquet", backend, shard=Shard(i, count)) for i in range(1, count + 1)
    ]
    # Each shard measured only its part (and the dense reference, which every shard times itself).
    assert backend.loaded == len(whole.rows) + count
    for i, prof in enumerate(shards):
        assert all(int(s) % count == i for s in prof.rows["sample_id"])
        assert prof.meta["shard"]["index"] == i + 1 and prof.meta["shard"]["count"] == count
        for other in shards[i + 1 :]:
            assert not _keys(prof) & _keys(other)
    assert set().union(*(_keys(p) for p in shards)) == _keys(whole)
    assert sum(len(p.rows) for p in shards) == len(whole.rows) == 8

    merged = merge_profiles([p.path for p in reversed(shards)], out=tmp_path / "merged.parquet")
    assert _keys(merged) == _keys(whole) and "shard" not in merged.meta
    assert merged.meta["merged"]["count"] == count and not merged.meta["merged"]["partial"]
    assert [r["shard"] for r in merged.meta["runs"]] == [f"{i}/{count}" for i in range(1, count + 1)]
    # The double's latency is exact, so each row's drift-corrected latency is the unsharded one's.
    by_id = whole.rows.set_index("sample_id")["latency_ms"]
    assert np.allclose(merged.rows.set_index("sample_id")["latency_ms"], by_id.loc[merged.rows["sample_id"]])
    assert merged.reference_ms() == whole.reference_ms()

    # An unsharded run with the same settings finds every network there and measures none.
    before = backend.loaded
    again = _profile(merged.path, backend)
    assert backend.loaded == before and len(again.rows) == 8


def test_each_shard_is_corrected_by_its_own_reference(tmp_path: Path) -> None:
    """Shard 2 ran on a host twice as slow (same device): its raw timings are doubled, but each row's
    ratio to the reference timed beside it is not, so the merged latencies keep the unsharded ranking
    and proportions, in units of the median of all the shards' reference timings."""
    whole = _profile(tmp_path / "whole.parquet", CountingBackend())
    first = _profile(tmp_path / "s1.parquet", CountingBackend(), shard=Shard(1, 2))
    second = _profile(tmp_path / "s2.parquet", SlowedBackend(), shard=Shard(2, 2))
    merged = merge_profiles([first.path, second.path], out=tmp_path / "m.parquet").rows.set_index("sample_id")
    rows = whole.rows.set_index("sample_id").loc[merged.index]
    raw = merged["raw_ms"] / rows["raw_ms"]
    assert sorted(set(np.round(raw, 6))) == [1.0, 2.0]  # as measured: shard 2 twice as slow
    scale = merged["latency_ms"] / rows["latency_ms"]
    assert np.allclose(scale, 1.5)  # corrected: one unit for all, the median of references at 1x and 2x


def test_a_merged_profile_fits_like_an_unsharded_one(tmp_path: Path) -> None:
    backend = CountingBackend()
    paths = [_profile(tmp_path / f"s{i}.parquet", backend, shard=Shard(i, 2)).path for i in (1, 2)]
    merged = api.merge_profiles(paths, out=tmp_path / "merged.parquet")
    fitted = api.fit(
        merged.path, out=tmp_path / "p.pt", config=FitConfig(compare=("ridge", "flops"), folds=0)
    )
    assert fitted.rows["total"] == 8 and (tmp_path / "p.pt").is_file()


def test_a_shard_of_another_device_or_split_is_refused_and_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    here = _profile(tmp_path / "a.parquet", CountingBackend(), shard=Shard(1, 2)).path
    there = _profile(tmp_path / "b.parquet", CountingBackend(cpu="other-cpu"), shard=Shard(2, 2)).path
    out = tmp_path / "m.parquet"
    merge = ["profile", "--merge", str(here), str(there), "--out", str(out)]
    _fails(capsys, merge, f"'{there}' was measured on another device (cpu 'other-cpu', not 'test-cpu' as in")
    assert not out.exists() and not out.with_suffix(".json").exists()

    mine = _profile(tmp_path / "c.parquet", CountingBackend(), shard=Shard(2, 2)).path
    # Library versions are not part of the device's identity: a shard measured with other versions joins.
    side = mine.with_suffix(".json")
    side.write_text(json.dumps({**json.loads(side.read_text()), "device": {
        **json.loads(side.read_text())["device"], "versions": {"onnxruntime": "0.0"}}}))  # fmt: skip
    _fails(capsys, ["profile", "--merge", str(here), str(here), "--out", str(out)], "are both shard 1/2")
    _fails(capsys, ["profile", "--merge", str(here), "--out", str(out)], "shard 2/2 missing")
    third = _profile(tmp_path / "d.parquet", CountingBackend(), shard=Shard(2, 3)).path
    _fails(capsys, ["profile", "--merge", str(here), str(third), "--out", str(out)], "is shard 2/3 and")
    other = _profile(tmp_path / "e.parquet", CountingBackend(), samples=6, shard=Shard(2, 2)).path
    _fails(capsys, ["profile", "--merge", str(here), str(other), "--out", str(out)], "samples 6, not 8")
    whole = _profile(tmp_path / "w.parquet", CountingBackend()).path
    _fails(capsys, ["profile", "--merge", str(here), str(whole), "--out", str(out)], "not a shard")
    assert not out.exists() and not out.with_suffix(".json").exists()

    assert main(["profile", "--merge", str(here), str(mine), "--out", str(out)]) == 0
    assert len(read_profile(out).rows) == 8
    capsys.readouterr()
    _fails(capsys, ["profile", "--merge", str(here), str(mine), "--out", str(out)], "exists: pass a new")


class _Killed(Exception):
    pass


def test_an_interrupted_shard_is_refused_until_its_rerun_completes_it(tmp_path: Path) -> None:
    backend = CountingBackend()
    first = _profile(tmp_path / "s1.parquet", backend, shard=Shard(1, 2)).path

    def kill_after_two(done: int, total: int) -> None:
        if done == 2:
            raise _Killed

    second = tmp_path / "s2.parquet"
    with pytest.raises(_Killed):
        _profile(second, backend, shard=Shard(2, 2), on_sample=kill_after_two)
    assert len(read_profile(second).rows) == 2  # every row was written as it was measured
    with pytest.raises(ProfileError, match="lacks 2 networks of its part of the plan: rerun its command"):
        merge_profiles([first, second], out=tmp_path / "m.parquet")
    partial = merge_profiles([first, second], out=tmp_path / "partial.parquet", partial=True)
    assert len(partial.rows) == 6 and partial.meta["merged"]["partial"]
    with pytest.raises(ProfileError, match="holds shard 2/2 and this run measures shard 1/2"):
        _profile(second, backend, shard=Shard(1, 2))
    with pytest.raises(ProfileError, match="holds shard 2/2 and this run measures the whole plan"):
        _profile(second, backend)

    before = backend.loaded
    resumed = _profile(second, backend, shard=Shard(2, 2))
    assert backend.loaded == before + 2 + 1  # the 2 missing networks and the reference, nothing again
    assert len(resumed.rows) == 4
    merged = merge_profiles([first, second], out=tmp_path / "m.parquet")
    assert sorted(merged.rows["sample_id"]) == list(range(8))


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--shard", "0/3"], "--shard 0/3 is not a shard: pass --shard I/N with whole numbers 1 <= I <= N"),
        (["--shard", "4/3"], "--shard 4/3 is not a shard"),
        (["--shard", "1/0"], "--shard 1/0 is not a shard"),
        (["--shard=-1/3"], "--shard '-1/3' is not I/N"),
        (["--shard", "two/3"], "--shard 'two/3' is not I/N"),
        (["--shard", "1/3/4"], "--shard '1/3/4' is not I/N"),
        (["--shard", "3"], "--shard '3' is not I/N"),
        (["--shard", "1/5", "--samples", "4"], "splits 4 networks into more shards than networks"),
        (["--shard", "1/2", "--active"], "--active picks networks from all that are measured"),
        (["--shard", "1/2", "--lut"], "--lut is measured once, not in shards"),
    ],
)
def test_bad_shards_are_refused_before_any_measurement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], expected: str
) -> None:
    out = tmp_path / "p.parquet"
    _fails(capsys, ["profile", "nosuchnet", *flags, "--out", str(out)], expected)  # before the model loads
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_merge_arguments_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shard = str(tmp_path / "s.parquet")
    _fails(capsys, ["profile", "--merge", shard], "pass --out OUT.parquet")
    _fails(capsys, ["profile", "resnet20", "--merge", shard, "--out", shard], "drop 'resnet20'")
    _fails(capsys, ["profile", "--shard", "1/2", "--merge", shard, "--out", "m"], "drop --shard")
    _fails(capsys, ["profile", "--merge", shard, "--out", shard], "is one of the shards")
    _fails(capsys, ["profile", "--merge", shard, "--out", str(tmp_path / "m")], "does not exist")
    _fails(capsys, ["profile", "--shard", "1/2"], "name the model to profile")
    with pytest.raises(ConfigError, match="needs the shards"):
        merge_profiles([], out=tmp_path / "m.parquet")


def test_the_command_line_measures_shards_and_merges_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # default shard names, under ./latency_profiles
    for i in (1, 2):
        assert main(["profile", "resnet20", "--samples", "4", "--shard", f"{i}/2", *FAST_FLAGS]) == 0
    found = sorted((tmp_path / "latency_profiles").glob("*/*.parquet"))
    assert [p.name for p in found] == [
        f"resnet20__onnxruntime__fp32__bs1__32x32__shard{i}of2.parquet" for i in (1, 2)
    ]
    capsys.readouterr()
    assert main(["profile", "--merge", *map(str, found), "--out", "merged.parquet"]) == 0
    assert "4 sub-networks from 2 of 2 shards in merged.parquet" in capsys.readouterr().err
    assert sorted(read_profile(tmp_path / "merged.parquet").rows["sample_id"]) == [0, 1, 2, 3]


def _shard_command(out: Path, shard: str) -> list[str]:
    return [sys.executable, "-m", "autoprune", "profile", "resnet20", "--samples", "24", "--shard", shard,
            *FAST_FLAGS, "--out", str(out)]  # fmt: skip


@pytest.mark.slow
def test_a_shard_killed_with_sigkill_resumes_and_merges(tmp_path: Path) -> None:
    """Kill a real shard process mid-run; the rerun keeps its rows, measures the rest of its part only."""
    out = tmp_path / "s2.parquet"
    proc = subprocess.Popen(_shard_command(out, "2/2"), stderr=subprocess.DEVNULL)
    deadline, rows = time.monotonic() + 120, 0
    while rows < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        rows = len(read_profile(out).rows) if out.with_suffix(".json").exists() and out.exists() else 0
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = read_profile(out).rows
    assert proc.returncode == -signal.SIGKILL and 3 <= len(before) < 12
    subprocess.run(_shard_command(out, "2/2"), check=True, stderr=subprocess.DEVNULL)
    after = read_profile(out).rows
    assert sorted(after["sample_id"]) == list(range(1, 24, 2))
    kept = after.set_index("sample_id").loc[before["sample_id"], "raw_ms"]
    assert np.array_equal(kept.to_numpy(), before["raw_ms"].to_numpy())  # not measured again
    subprocess.run(_shard_command(tmp_path / "s1.parquet", "1/2"), check=True, stderr=subprocess.DEVNULL)
    merged = merge_profiles([tmp_path / "s1.parquet", out], out=tmp_path / "m.parquet")
    assert sorted(merged.rows["sample_id"]) == list(range(24))
    assert not list(tmp_path.glob(".*.tmp"))
