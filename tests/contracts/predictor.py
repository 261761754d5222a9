"""The contract every latency predictor passes: subclass ``PredictorContract`` once per registered kind;
``tests/predictor/test_predictors.py`` holds the subclasses and checks that every registered kind has one.

The profile is synthetic, its latency law known: 0.1 ms + 0.5 ms x MACs / dense MACs."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
import torch

from autoprune.config import SamplingConfig
from autoprune.errors import BindingError
from autoprune.graph import ChannelGraph
from autoprune.latency import Profile
from autoprune.latency.lut import LayerTables
from autoprune.latency.sampler import plan_samples
from autoprune.models import create_model
from autoprune.predictor import (
    Features,
    LatencyPredictor,
    latency_metrics,
    layers_of,
    make_predictor,
    split_rows,
)

INPUT = [1, 3, 32, 32]
OFFSET_MS, MS_PER_DENSE = 0.1, 0.5  # the law: latency = 0.1 ms + 0.5 ms * MACs / dense MACs
DEVICE = {"cpu": "test-cpu", "logical_cores": 2, "accelerator": None, "versions": {}}
FAST_LPNET = {"members": 3, "epochs": 600}


@cache
def resnet20_features() -> tuple[torch.nn.Module, Features]:
    model = create_model("resnet20", num_classes=10).eval()
    groups = ChannelGraph(model, torch.zeros(1, 3, 32, 32)).groups
    layers = layers_of(model, INPUT, groups)
    plain = Features(groups, layers)
    # A lookup table whose entries are exactly proportional to each conv's MACs at its grid points:
    # bilinear interpolation of c_in * c_out is exact, so its sum is exactly proportional to MACs.
    grids = []
    for layer in layers:
        xin = (0,) if layer.depthwise else layer.in_axis
        table = [[layer.macs(ci or co, co) for co in layer.out_axis] for ci in xin]
        grids.append((xin, layer.out_axis, table))
    tables = LayerTables(groups, layers, grids)
    dense_lut = float(tables.per_layer(plain.widths_tensor([{}])).sum())
    grids = [(xi, xo, MS_PER_DENSE * np.asarray(t) / dense_lut) for xi, xo, t in grids]
    return model, Features(groups, layers, LayerTables(groups, layers, grids))


def synthetic_profile(n: int = 200, noise: float = 0.0, seed: int = 0) -> Profile:
    _, features = resnet20_features()
    groups = features.groups
    widths = [w for _, w in plan_samples(groups, SamplingConfig(samples=n, seed=seed))]
    macs = features.macs(widths).numpy()
    latency = OFFSET_MS + MS_PER_DENSE * macs / features.dense["macs"]
    latency *= np.exp(np.random.default_rng(seed).normal(0.0, noise, n))
    rows = pd.DataFrame({f"w:{g.name}": [w[g.name] for w in widths] for g in groups})
    rows["latency_ms"], rows["kind"], rows["noisy"] = latency, "uniform", False
    rows.loc[0, "kind"] = "dense"
    meta = {
        "model": "resnet20", "num_classes": 10, "input_shape": INPUT, "batch_size": 1,
        "backend": "onnxruntime", "precision": "fp32", "backend_settings": {}, "protocol": {},
        "device": DEVICE, "sampling": SamplingConfig(samples=n).to_dict(),
        "groups": [[g.name, g.channels] for g in groups],
    }  # fmt: skip
    return Profile(path=None, meta=meta, rows=rows)  # type: ignore[arg-type]


class PredictorContract:
    """Subclass with ``kind`` set, the options that keep its fit fast, and what it reaches on the exact
    law (held-out MAPE % at most, share within ±10 % at least; ``None``: it ranks networks only)."""

    kind: ClassVar[str]
    options: ClassVar[dict[str, Any]] = {}
    max_mape: ClassVar[float | None] = None
    min_within_10: ClassVar[float] = 0.0

    def fitted(self, profile: Profile, rows: np.ndarray | None = None) -> LatencyPredictor:
        _, features = resnet20_features()
        return make_predictor(self.kind, features, **self.options).fit(profile, rows)

    def test_recovers_a_known_law_within_its_expected_error(self) -> None:
        profile = synthetic_profile()
        train, test = split_rows(len(profile.rows), 0.2, 0)
        predictor = self.fitted(profile, train)
        widths = profile.widths()
        m = latency_metrics(predictor.predict([widths[i] for i in test]), profile.latency_ms()[test])
        if self.max_mape is not None:
            assert m["mape"] <= self.max_mape and m["within_10"] >= self.min_within_10, m
        assert m["kendall_tau"] > 0.9

    def test_one_network_and_a_list_agree(self) -> None:
        profile = synthetic_profile(60)
        predictor = self.fitted(profile)
        widths = profile.widths()[:5]
        batch = predictor.predict(widths)
        assert batch.shape == (5,)
        assert [predictor.predict(w) for w in widths] == pytest.approx(list(batch), rel=1e-6)

    def test_save_load_and_binding(self, tmp_path: Path) -> None:
        profile = synthetic_profile(60)
        _, features = resnet20_features()
        predictor = self.fitted(profile)
        predictor.save(tmp_path / "p.pt")
        loaded = LatencyPredictor.load(tmp_path / "p.pt")
        assert type(loaded) is type(predictor)
        widths = profile.widths()[:7]
        assert loaded.predict(widths) == pytest.approx(predictor.predict(widths), rel=1e-6)
        loaded.check_model(features.groups, "resnet20")
        with pytest.raises(BindingError, match="profile and fit this model"):
            loaded.check_model(features.groups[:-1], "other")
        with pytest.raises(BindingError, match="another device"):
            loaded.check_device({**DEVICE, "cpu": "another-cpu"})
