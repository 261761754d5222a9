"""LPNet: an ensemble of small MLPs from sub-network features to log-latency, differentiable in the widths.

The target is standardised log-latency, so the loss weighs relative, not absolute, errors (a 0.1 ms miss
matters more on a 0.3 ms network than on a 3 ms one). The K members are trained together as one batched
network (one matmul per layer for all of them), each on its own K-1 of K folds of the rows, with early
stopping on its held-back fold (the best weights are kept). Their disagreement is the uncertainty: the
std of the members' log-latencies, scaled so that on the rows each member did not train on the
standardised errors have unit variance. The confidence bound ``mean + z * std`` takes z from those
out-of-fold errors (their ``confidence`` quantile), not from a Gaussian.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from autoprune.errors import ConfigError
from autoprune.predictor.base import LatencyPredictor, register
from autoprune.predictor.features import Features


class LPNet(nn.Module):
    """``members`` MLPs (SiLU, smooth so gradients w.r.t. widths are informative) evaluated in one batch."""

    def __init__(self, n_inputs: int, *, members: int = 5, hidden: int = 64, layers: int = 2) -> None:
        super().__init__()
        dims = [n_inputs] + [hidden] * layers + [1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for d_in, d_out in itertools.pairwise(dims):
            bound = 1 / math.sqrt(d_in)  # nn.Linear's default initialisation, per member
            self.weights.append(nn.Parameter(torch.empty(members, d_in, d_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(members, 1, d_out).uniform_(-bound, bound)))

    @property
    def members(self) -> int:
        return int(self.weights[0].shape[0])

    def forward(self, x: Tensor) -> Tensor:
        """(N, inputs) -> (members, N) standardised log-latencies."""
        h = x.unsqueeze(0).expand(self.members, *x.shape)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = nn.functional.silu(h)
        return h.squeeze(-1)


@register
class LPNetPredictor(LatencyPredictor):
    kind = "lpnet"
    label = "LPNet (ensemble)"
    has_spread = True
    differentiable = True

    def __init__(
        self,
        features: Features,
        *,
        members: int = 5,
        hidden: int = 64,
        layers: int = 2,
        epochs: int = 1500,
        lr: float = 3e-3,
        weight_decay: float = 1e-5,
        seed: int = 0,
    ) -> None:
        super().__init__(features)
        if members < 2:
            raise ConfigError(f"an LPNet ensemble needs >= 2 members, got {members}")
        self.opts: dict[str, Any] = dict(
            members=members,
            hidden=hidden,
            layers=layers,
            epochs=epochs,
            lr=lr,
            weight_decay=weight_decay,
            seed=seed,
        )
        self.net = self._new_net()
        self.y_mean, self.y_std, self.spread_scale = 0.0, 1.0, 1.0
        self.z_errors: list[float] = []  # out-of-fold errors in units of the calibrated std, sorted

    def _new_net(self) -> LPNet:
        with torch.random.fork_rng(devices=[]):  # seeded without touching the global random state
            torch.manual_seed(self.opts["seed"])
            n_inputs = len(self.features.names)
            net = LPNet(n_inputs, members=self.opts["members"], hidden=self.opts["hidden"],
                        layers=self.opts["layers"])  # fmt: skip
        return net.eval()

    def _options(self) -> dict[str, Any]:
        return dict(self.opts)

    # -- training ---------------------------------------------------------------------------------
    def _fit(self, x: Tensor, latency_ms: np.ndarray) -> None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # matrices of a few hundred rows: more threads only contend
        try:
            self._train(x, latency_ms)
        finally:
            torch.set_num_threads(threads)

    def _train(self, x: Tensor, latency_ms: np.ndarray) -> None:
        k, n = self.opts["members"], len(latency_ms)
        y = np.log(latency_ms)
        self.y_mean, self.y_std = float(y.mean()), float(y.std() or 1.0)
        target = torch.tensor((y - self.y_mean) / self.y_std, dtype=torch.float32)
        fold = torch.as_tensor(np.random.default_rng(self.opts["seed"]).permutation(n) % k)
        held = (fold.unsqueeze(0) == torch.arange(k).unsqueeze(1)).float()  # (K, N): member k's fold
        train = 1.0 - held
        x = x.float()
        self.net = self._new_net().train()
        params = list(self.net.parameters())
        opt = torch.optim.AdamW(params, lr=self.opts["lr"], weight_decay=self.opts["weight_decay"])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, self.opts["epochs"])
        best = [p.detach().clone() for p in params]
        best_loss = torch.full((k,), float("inf"))
        for epoch in range(1, self.opts["epochs"] + 1):
            err = (self.net(x) - target) ** 2
            loss = ((err * train).sum(1) / train.sum(1).clamp(min=1)).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if epoch % 10 == 0 or epoch == self.opts["epochs"]:
                with torch.no_grad():
                    val = ((self.net(x) - target) ** 2 * held).sum(1) / held.sum(1).clamp(min=1)
                    better = val < best_loss
                    best_loss = torch.where(better, val, best_loss)
                    for b, p in zip(best, params, strict=True):
                        b[better] = p.detach()[better]
        with torch.no_grad():
            for b, p in zip(best, params, strict=True):
                p.copy_(b)
            self.net.eval()
            out = self.net(x)  # (K, N)
            oof = (out * held).sum(0)  # each row predicted by the member that did not train on it
            error = target - oof  # signed, standardised log-latency: > 0 where the member read low
            std = out.std(0, unbiased=True)
        self.spread_scale = float(torch.sqrt((error**2).mean() / (std**2).mean().clamp(min=1e-12)))
        self.z_errors = sorted((error / (std * self.spread_scale).clamp(min=1e-6)).tolist())

    # -- prediction -------------------------------------------------------------------------------
    def _members_log(self, x: Tensor) -> Tensor:
        return self.net(x.float()) * self.y_std + self.y_mean  # (K, N) log-latency

    def _predict(self, x: Tensor) -> np.ndarray:
        return torch.exp(self._members_log(x).mean(0)).numpy()

    def _log_spread(self, x: Tensor) -> tuple[np.ndarray, np.ndarray]:
        logs = self._members_log(x)
        return logs.mean(0).numpy(), (logs.std(0, unbiased=True) * self.spread_scale).numpy()

    def _z(self, confidence: float) -> float:
        """The ``confidence`` quantile of the out-of-fold errors in std units (a Gaussian's z when
        there are too few rows to read it): measured errors have heavier tails than a Gaussian."""
        if len(self.z_errors) < 20:
            return super()._z(confidence)
        return float(np.quantile(self.z_errors, confidence))

    def predict_fractions(self, fractions: Tensor) -> Tensor:
        """Latency (ms) of kept fractions (..., groups); differentiable, for gradient-based search."""
        flat = fractions.reshape(-1, len(self.groups))
        widths = flat * self.features.channels.to(flat.dtype)
        logs = self._members_log(self.features.from_widths(widths.double()).float())
        return torch.exp(logs.mean(0)).reshape(fractions.shape[:-1])

    # -- persistence ------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "y_mean": self.y_mean, "y_std": self.y_std,
                "spread_scale": self.spread_scale, "z_errors": self.z_errors}  # fmt: skip

    def _load_state(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.y_mean, self.y_std = float(state["y_mean"]), float(state["y_std"])
        self.spread_scale = float(state["spread_scale"])
        self.z_errors = [float(z) for z in state["z_errors"]]


def split_rows(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed random train/held-out row indices."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, round(n * holdout))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


__all__ = ["LPNet", "LPNetPredictor", "split_rows"]
