"""Every predictor against its contract (`contracts/predictor.py`: a synthetic profile whose latency law is
known, binding and persistence), and what sets each apart."""

from __future__ import annotations

import pathlib
import pickle
from functools import cache
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from contracts import covered
from contracts.predictor import (
    FAST_LPNET,
    INPUT,
    OFFSET_MS,
    PredictorContract,
    resnet20_features,
    synthetic_profile,
)

from autoprune.config import SamplingConfig
from autoprune.errors import BindingError, ConfigError
from autoprune.graph import ChannelGraph, count_macs_params, pruned_copy
from autoprune.latency import Profile
from autoprune.latency.sampler import plan_samples
from autoprune.models import create_model
from autoprune.predictor import (
    Features,
    LatencyPredictor,
    compare,
    layers_of,
    make_predictor,
    predictor_kinds,
    split_rows,
)


class TestLPNet(PredictorContract):
    kind = "lpnet"
    options: ClassVar[dict[str, Any]] = FAST_LPNET
    max_mape, min_within_10 = 1.5, 100.0


class TestFlops(PredictorContract):
    kind = "flops"
    max_mape, min_within_10 = 0.5, 100.0  # piecewise-linear in MACs: the law is linear in MACs


class TestLut(PredictorContract):
    kind = "lut"  # the raw sum misses the law's offset (its own test below): it ranks, no more


class TestLutLinear(PredictorContract):
    kind = "lut_linear"
    max_mape, min_within_10 = 1e-6, 100.0  # scale and offset recover the law exactly


class TestGradientBoosting(PredictorContract):
    kind = "gb"
    max_mape, min_within_10 = 3.0, 97.0


class TestRandomForest(PredictorContract):
    kind = "rf"
    max_mape, min_within_10 = 5.0, 90.0


class TestRidge(PredictorContract):
    kind = "ridge"
    max_mape, min_within_10 = 3.0, 95.0  # linear in the features, on log-latency


def test_every_registered_predictor_has_a_contract_class() -> None:
    assert set(predictor_kinds()) == covered(PredictorContract, "kind")


def test_the_raw_lookup_table_sum_misses_exactly_the_part_it_does_not_measure() -> None:
    """HALP's sum covers the convolutions only: here it is the law without its fixed offset."""
    profile = synthetic_profile(50)
    _, features = resnet20_features()
    predicted = make_predictor("lut", features).fit(profile).predict(profile.widths())
    assert predicted == pytest.approx(profile.latency_ms() - OFFSET_MS, rel=1e-9)


def test_lpnet_beats_the_flops_baseline_where_latency_is_not_a_function_of_macs() -> None:
    """A law where one group costs far more per MAC (a memory-bound layer): MACs alone cannot tell."""
    profile = synthetic_profile(240)
    _, features = resnet20_features()
    frac = features(profile.widths())[:, 0].numpy()  # the stem's kept fraction
    profile.rows["latency_ms"] = profile.latency_ms() + 0.3 * frac**2
    comparison = compare(profile, features, ["lpnet", "flops"], folds=0, options={"lpnet": FAST_LPNET})
    lp, flops = (comparison.results[k]["held_out"] for k in ("lpnet", "flops"))
    assert lp["mape"] < flops["mape"] / 2 and lp["within_10"] >= flops["within_10"]


def test_lpnet_gradients_reach_the_widths() -> None:
    _, features = resnet20_features()
    predictor = make_predictor("lpnet", features, **FAST_LPNET).fit(synthetic_profile())
    fractions = torch.full((len(features.groups),), 0.6, requires_grad=True)
    latency = predictor.predict_fractions(fractions)  # type: ignore[attr-defined]
    latency.backward()
    assert fractions.grad is not None and torch.all(torch.isfinite(fractions.grad))
    assert fractions.grad.sum() > 0  # keeping more channels costs time
    widths = {g.name: round(0.6 * g.channels) for g in features.groups}
    assert float(latency) == pytest.approx(predictor.predict(widths), rel=0.05)  # rounding aside


@cache
def _noisy_split() -> tuple[Profile, np.ndarray, np.ndarray]:
    """3000 networks whose latency is the law times log-normal noise of 4 %: 1000 to fit, 2000 unseen."""
    profile = synthetic_profile(3000, noise=0.04, seed=1)
    train, test = split_rows(3000, 2 / 3, 0)
    return profile, train, test


@pytest.mark.parametrize("kind", ["lpnet", "rf", "ridge"])  # held-back members, out-of-bag, K-fold refits
def test_the_upper_bound_covers_unseen_networks_with_the_confidence_asked(kind: str) -> None:
    """Coverage within ±3 points of 0.90 and 0.95. Its sampling sd is about 1.2 points at 0.90 (1000
    calibrating rows, 2000 unseen ones) and 1.0 at 0.95: a miscalibrated bound fails, a right one passes."""
    profile, train, test = _noisy_split()
    _, features = resnet20_features()
    predictor = make_predictor(kind, features, **(FAST_LPNET if kind == "lpnet" else {})).fit(profile, train)
    widths = profile.widths()
    held = [widths[i] for i in test]
    measured, predicted = profile.latency_ms()[test], predictor.predict(held)
    for confidence in (0.9, 0.95):
        upper = predictor.predict_upper(held, confidence)
        assert np.all(upper > predicted)
        covered = float(np.mean(measured <= upper))
        assert abs(covered - confidence) <= 0.03, (confidence, covered)
    assert predictor.predict_upper(held[0], 0.95) == pytest.approx(
        float(predictor.predict_upper(held, 0.95)[0])
    )


def test_compare_reports_each_bound_coverage_on_rows_its_fit_did_not_see() -> None:
    """Over 200 out-of-fold rows the sampling sd is 2.1 points at 0.90 and 1.5 at 0.95: 3 sd allowed."""
    profile = synthetic_profile(200, noise=0.04, seed=2)
    _, features = resnet20_features()
    comparison = compare(profile, features, ["ridge", "flops"], kfold_coverage=True)
    for kind in ("ridge", "flops"):
        cover = comparison.results[kind]["coverage"]
        assert abs(cover["kfold"]["0.90"] - 90) <= 6.3 and abs(cover["kfold"]["0.95"] - 95) <= 4.5, cover
        assert set(cover["held_out"]) == {"0.90", "0.95"}
        assert 0 < cover["margin"]["0.90"] < cover["margin"]["0.95"]
    assert compare(profile, features, ["ridge"]).results["ridge"]["coverage"]["kfold"] is None  # not asked


def test_a_bound_needs_enough_calibrating_networks() -> None:
    _, features = resnet20_features()
    small = make_predictor("ridge", features).fit(synthetic_profile(12, noise=0.04))
    small.predict_upper({}, 0.9)  # 12 networks calibrate a 0.90 bound: the 12th of 12 ratios
    with pytest.raises(ConfigError, match=r"needs >= 19 networks.*--samples"):
        small.predict_upper({}, 0.95)
    with pytest.raises(ConfigError, match="must be in"):
        small.predict_upper({}, 1.0)
    with pytest.raises(ConfigError, match="calibrate=False"):
        make_predictor("ridge", features).fit(synthetic_profile(12), calibrate=False).predict_upper({}, 0.9)


def test_bad_predictor_inputs_are_one_line_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, features = resnet20_features()
    with pytest.raises(ConfigError, match="unknown predictor 'nope'"):
        make_predictor("nope", features)
    with pytest.raises(ConfigError, match="--lut"):
        make_predictor("lut", Features(features.groups, features.layers))
    with pytest.raises(BindingError, match="does not exist"):
        LatencyPredictor.load(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a predictor")
    with pytest.raises(BindingError, match="not an autoprune predictor"):
        LatencyPredictor.load(tmp_path / "junk.pt")


class _Payload:
    """Unpickling it writes a file: the proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (pathlib.Path.write_text, (pathlib.Path(self.marker), "code ran"))


@pytest.mark.parametrize("kind", ["gb", "rf", "ridge"])
def test_a_planted_code_executing_payload_is_refused_and_never_runs(tmp_path, kind: str) -> None:  # type: ignore[no-untyped-def]
    _, features = resnet20_features()
    make_predictor(kind, features).fit(synthetic_profile(30)).save(tmp_path / "p.pt")
    payload = torch.load(tmp_path / "p.pt", weights_only=True)
    assert "pickle" not in payload["state"]  # stored with skops, not pickle
    marker = tmp_path / "pwned"
    planted = {**payload, "state": {"pickle": pickle.dumps(_Payload(str(marker)))}}  # an older format
    torch.save(planted, tmp_path / "evil.pt")
    with pytest.raises(BindingError, match="not an autoprune predictor"):
        LatencyPredictor.load(tmp_path / "evil.pt")
    import skops.io

    foreign = {**payload, "state": {"skops": skops.io.dumps({"model": _Payload(str(marker))})}}
    torch.save(foreign, tmp_path / "foreign.pt")
    with pytest.raises(BindingError, match="not an autoprune predictor"):
        LatencyPredictor.load(tmp_path / "foreign.pt")
    assert not marker.exists()


@pytest.mark.parametrize("model_name", ["resnet20", "mobilenet_v2"])
def test_derived_macs_follow_torch_prunings_counter(model_name: str) -> None:
    """Conv MACs from the features against Torch-Pruning's count of the really pruned network."""
    model = create_model(model_name, num_classes=10).eval()
    example = torch.zeros(1, 3, 32, 32)
    groups = ChannelGraph(model, example).groups
    features = Features(groups, layers_of(model, INPUT, groups))
    widths = [w for _, w in plan_samples(groups, SamplingConfig(samples=3, seed=3))]
    counted = np.array([count_macs_params(pruned_copy(model, example, w)[0], example)[0] for w in widths])
    derived = features.macs(widths).numpy()
    limit = 0.05 if model_name == "resnet20" else 0.16  # BN and activations are not convolutions
    assert np.all(derived <= counted) and np.all(derived / counted > 1 - limit)
    assert np.argsort(derived).tolist() == np.argsort(counted).tolist()
