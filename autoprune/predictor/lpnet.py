"""LPNet: a small MLP from normalised widths to latency, differentiable in the widths.

The input is each group's kept fraction (``width / channels``) in profile group order; the target is
standardised log-latency, so the loss weighs relative, not absolute, errors (a 0.1 ms miss matters
more on a 0.3 ms network than on a 3 ms one).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
from torch import Tensor, nn

from autoprune import __version__
from autoprune._io import atomic_write
from autoprune.config import FitConfig
from autoprune.errors import BindingError, ProfileError
from autoprune.graph import ChannelGroup
from autoprune.latency import Profile, device_identity
from autoprune.predictor.metrics import latency_metrics

FORMAT = 1


class LPNet(nn.Module):
    def __init__(self, n_inputs: int, *, hidden: int = 64, layers: int = 2) -> None:
        super().__init__()
        dims = [n_inputs] + [hidden] * layers
        blocks: list[nn.Module] = []
        for a, b in itertools.pairwise(dims):
            blocks += [nn.Linear(a, b), nn.SiLU()]  # smooth, so gradients w.r.t. widths are informative
        self.body = nn.Sequential(*blocks, nn.Linear(dims[-1], 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x).squeeze(-1)  # (N, groups) -> (N,)


class LatencyPredictor:
    """LPNet bound to the channel groups of one model and to the profile (device, backend) it learnt."""

    def __init__(
        self, net: LPNet, groups: Sequence[ChannelGroup], *, y_mean: float, y_std: float, meta: dict[str, Any]
    ) -> None:
        self.net = net.eval()
        self.groups = list(groups)
        self.y_mean, self.y_std = y_mean, y_std
        self.meta = meta
        self._channels = torch.tensor([g.channels for g in self.groups], dtype=torch.float32)

    # -- prediction -----------------------------------------------------------------------------
    def encode(self, widths: Sequence[Mapping[str, int]]) -> Tensor:
        """(N, groups) kept fractions; a group missing from ``widths`` counts as dense."""
        rows = [[float(w.get(g.name, g.channels)) for g in self.groups] for w in widths]
        return torch.tensor(rows, dtype=torch.float32) / self._channels

    def predict_fractions(self, fractions: Tensor) -> Tensor:
        """Latency (ms) of kept fractions (..., groups); differentiable, for gradient-based search."""
        return torch.exp(self.net(fractions) * self.y_std + self.y_mean)

    @overload
    def predict(self, widths: Mapping[str, int]) -> float: ...
    @overload
    def predict(self, widths: Sequence[Mapping[str, int]]) -> np.ndarray: ...
    def predict(self, widths: Mapping[str, int] | Sequence[Mapping[str, int]]) -> float | np.ndarray:
        """Predicted latency in ms of one widths dict (float) or of many (array)."""
        many = [widths] if isinstance(widths, Mapping) else list(widths)
        with torch.no_grad():
            out = self.predict_fractions(self.encode(many)).numpy().astype(float)
        return float(out[0]) if isinstance(widths, Mapping) else out

    # -- binding --------------------------------------------------------------------------------
    def check_model(self, groups: Sequence[ChannelGroup], model_spec: str) -> None:
        """Refuse a model whose channel groups are not the ones this predictor was fit on."""
        mine = [(g.name, g.channels) for g in self.groups]
        theirs = [(g.name, g.channels) for g in groups]
        if mine != theirs:
            raise BindingError(
                f"the predictor was fit for model '{self.meta['model']}' ({len(mine)} channel groups); "
                f"'{model_spec}' has {len(theirs)} other groups: profile and fit this model first"
            )

    def check_device(self, fingerprint: dict[str, Any]) -> None:
        """Refuse to measure on a device other than the one the predictor's profile came from."""
        mine, theirs = device_identity(self.meta["device"]), device_identity(fingerprint)
        if mine != theirs:
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise BindingError(
                f"the predictor's profile was measured on another device ({diff[0]}: {mine.get(diff[0])!r}, "
                f"here {theirs.get(diff[0])!r}): profile this device and fit again"
            )

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        payload = {
            "format": FORMAT,
            "kind": "lpnet",
            "autoprune_version": __version__,
            "state_dict": self.net.state_dict(),
            "groups": [[g.name, g.channels] for g in self.groups],
            "y_mean": self.y_mean,
            "y_std": self.y_std,
            "meta": self.meta,
        }
        atomic_write(path, lambda p: torch.save(payload, p))

    @classmethod
    def load(cls, path: str | Path) -> LatencyPredictor:
        path = Path(path)
        if not path.is_file():
            raise BindingError(f"predictor '{path}' does not exist: run autoprune fit PROFILE --out {path}")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            groups = [ChannelGroup(name, int(ch), ()) for name, ch in payload["groups"]]
            cfg = payload["meta"]["fit"]
            net = LPNet(len(groups), hidden=cfg["hidden"], layers=cfg["layers"])
            net.load_state_dict(payload["state_dict"])
        except Exception as exc:
            raise BindingError(
                f"'{path}' is not an autoprune predictor ({type(exc).__name__}): run autoprune fit"
            ) from exc
        return cls(net, groups, y_mean=payload["y_mean"], y_std=payload["y_std"], meta=payload["meta"])


def split_rows(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed random train/held-out row indices."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, round(n * holdout))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def fit_lpnet(profile: Profile, config: FitConfig) -> tuple[LatencyPredictor, dict[str, dict[str, float]]]:
    """Train LPNet on the profile's train split; return it and held-out metrics (LPNet and the
    train-mean baseline). The returned predictor is trained on the train split only."""
    n = len(profile.rows)
    if n < 5:
        raise ProfileError(
            f"profile '{profile.path}' has {n} networks; fitting needs >= 5: profile with more --samples"
        )
    groups = profile.groups
    widths, latency = profile.widths(), profile.latency_ms()
    train_idx, test_idx = split_rows(n, config.holdout, config.seed)
    y = np.log(latency)
    y_mean, y_std = float(y[train_idx].mean()), float(y[train_idx].std() or 1.0)
    net = _new_net(len(groups), config)
    predictor = LatencyPredictor(net, groups, y_mean=y_mean, y_std=y_std, meta={})
    x = predictor.encode([widths[i] for i in train_idx])
    target = torch.tensor((y[train_idx] - y_mean) / y_std, dtype=torch.float32)
    # Early stopping: pick the epoch count on an inner split of the training rows (never the held-out
    # rows), then train on all training rows for that many epochs.
    inner_fit, inner_val = split_rows(len(train_idx), 0.2, config.seed + 1)
    probe = _new_net(len(groups), config)
    epochs = _train(
        probe, x[inner_fit], target[inner_fit], config, config.epochs, val=(x[inner_val], target[inner_val])
    )
    _train(net, x, target, config, epochs)
    held = [widths[i] for i in test_idx]
    metrics = {
        "lpnet": latency_metrics(predictor.predict(held), latency[test_idx]),
        "train_mean": latency_metrics(np.full(len(test_idx), latency[train_idx].mean()), latency[test_idx]),
    }
    kinds = profile.rows["kind"].to_numpy()
    predictor.meta = {
        **{
            k: profile.meta[k]
            for k in (
                "model",
                "num_classes",
                "input_shape",
                "batch_size",
                "backend",
                "precision",
                "backend_settings",
                "device",
                "protocol",
                "sampling",
            )
        },
        "profile": str(profile.path),
        "dense_ms": float(latency[kinds == "dense"][0]) if (kinds == "dense").any() else None,
        "narrowest_ms": float(latency[kinds == "narrowest"][0]) if (kinds == "narrowest").any() else None,
        "fit": config.to_dict(),
        "metrics": metrics,
        "rows": {"train": len(train_idx), "held_out": len(test_idx)},
    }
    return predictor, metrics


def _new_net(n_inputs: int, config: FitConfig) -> LPNet:
    """A freshly initialised LPNet, seeded without touching the global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return LPNet(n_inputs, hidden=config.hidden, layers=config.layers)


def _train(
    net: LPNet,
    x: Tensor,
    target: Tensor,
    config: FitConfig,
    epochs: int,
    *,
    val: tuple[Tensor, Tensor] | None = None,
    every: int = 10,
) -> int:
    """Full-batch AdamW with a cosine schedule (profiles hold hundreds of rows, not millions).
    With ``val``, return the epoch count whose validation loss was lowest."""
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    best_loss, best_epoch = float("inf"), epochs
    net.train()
    for epoch in range(1, epochs + 1):
        loss = nn.functional.mse_loss(net(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if val is not None and epoch % every == 0:
            with torch.no_grad():
                val_loss = float(nn.functional.mse_loss(net(val[0]), val[1]))
            if val_loss < best_loss:
                best_loss, best_epoch = val_loss, epoch
    net.eval()
    return best_epoch
