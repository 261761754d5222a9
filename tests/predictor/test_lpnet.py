from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from autoprune.config import FitConfig
from autoprune.errors import BindingError
from autoprune.graph import ChannelGroup
from autoprune.latency import Profile
from autoprune.predictor import LatencyPredictor, fit_lpnet

GROUPS = [ChannelGroup(f"g{i}", c, ()) for i, c in enumerate([16, 32, 64, 64, 32])]
META = {
    "model": "synthetic",
    "num_classes": 10,
    "input_shape": [1, 3, 32, 32],
    "batch_size": 1,
    "backend": "onnxruntime",
    "precision": "fp32",
    "backend_settings": {},
    "protocol": {},
    "device": {"cpu": "test-cpu", "logical_cores": 2, "accelerator": None, "versions": {}},
    "sampling": {"min_ratio": 0.25, "round_to": 8, "round_min_channels": 16},
}


def synthetic_profile(n: int = 200, seed: int = 0) -> Profile:
    """A known latency law: fixed overhead plus cost quadratic in the kept fractions (conv MACs)."""
    rng = np.random.default_rng(seed)
    frac = rng.uniform(0.25, 1.0, (n, len(GROUPS)))
    latency = 0.2 + 0.3 * (frac[:, :-1] * frac[:, 1:]).sum(1) + 0.1 * frac[:, 0]
    rows = pd.DataFrame(
        {f"w:{g.name}": np.round(frac[:, i] * g.channels).astype(int) for i, g in enumerate(GROUPS)}
    )
    # Latency follows the rounded widths, so the law is exactly recoverable from the columns.
    f = np.stack([rows[f"w:{g.name}"] / g.channels for g in GROUPS], 1)
    rows["latency_ms"] = 0.2 + 0.3 * (f[:, :-1] * f[:, 1:]).sum(1) + 0.1 * f[:, 0] + 0 * latency
    rows["kind"] = "uniform"
    return Profile(path=None, meta={**META, "groups": [[g.name, g.channels] for g in GROUPS]}, rows=rows)  # type: ignore[arg-type]


def test_lpnet_recovers_a_known_law_and_beats_the_mean() -> None:
    _, metrics = fit_lpnet(synthetic_profile(), FitConfig(epochs=800))
    lp, mean = metrics["lpnet"], metrics["train_mean"]
    assert lp["mape"] < 3.0 and lp["within_10"] >= 95.0 and lp["kendall_tau"] > 0.9
    assert lp["mape"] < mean["mape"] / 3


def test_gradients_reach_the_widths() -> None:
    predictor, _ = fit_lpnet(synthetic_profile(), FitConfig(epochs=300))
    fractions = torch.full((len(GROUPS),), 0.6, requires_grad=True)
    predictor.predict_fractions(fractions).backward()
    assert fractions.grad is not None and torch.all(torch.isfinite(fractions.grad))
    assert fractions.grad.sum() > 0  # keeping more channels costs time


def test_save_load_and_binding(tmp_path) -> None:  # type: ignore[no-untyped-def]
    predictor, _ = fit_lpnet(synthetic_profile(), FitConfig(epochs=100))
    predictor.save(tmp_path / "p.pt")
    loaded = LatencyPredictor.load(tmp_path / "p.pt")
    widths = {g.name: g.channels // 2 for g in GROUPS}
    assert loaded.predict(widths) == pytest.approx(predictor.predict(widths))
    loaded.check_model(GROUPS, "synthetic")
    with pytest.raises(BindingError, match="profile and fit this model"):
        loaded.check_model(GROUPS[:-1], "other")
    with pytest.raises(BindingError, match="another device"):
        loaded.check_device({**META["device"], "cpu": "another-cpu"})
    with pytest.raises(BindingError, match="does not exist"):
        LatencyPredictor.load(tmp_path / "missing.pt")
