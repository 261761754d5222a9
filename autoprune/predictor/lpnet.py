"""LPNet: an ensemble of small MLPs from sub-network features to log-latency, differentiable in the widths.

The target is standardised log-latency, so the loss weighs relative, not absolute, errors (a 0.1 ms miss
matters more on a 0.3 ms network than on a 3 ms one). The inputs are the features plus the logs of the
whole-network ones (MACs, parameters, lookup-table sum), standardised on the training rows. The
per-group kept fractions carry an L2 penalty (``group_penalty``) on their first-layer weights: latency is
mostly a function of the whole-network features, and on labels as noisy as CPU timings an unpenalised
MLP fits the noise through its dozens of per-group inputs (on the shipped profiles and 100-row samples
of them the penalty lifts the k-fold share within ±10 % by 5 points on average, to that of the best
baseline); a strong per-group effect still comes through.

The K members are trained together as one batched network (one matmul per layer for all of them), each
on its own K-1 of K folds of the rows, for a fixed number of epochs. Each row is thus predicted once by
a member that never saw it: those out-of-fold predictions calibrate the confidence bound (see
``LatencyPredictor.predict_upper``). There is no early stopping on the held-back folds, as it would
pick each member's weights on the very rows that calibrate the bound and make it too tight.
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

_WHOLE = ("macs", "params", "lut")  # whole-network features, relative to the dense network's: > 0


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
        epochs: int = 600,
        lr: float = 3e-3,
        weight_decay: float = 1e-5,
        group_penalty: float = 1000.0,
        seed: int = 0,
    ) -> None:
        super().__init__(features)
        if members < 2:
            raise ConfigError(f"an LPNet ensemble needs >= 2 members, got {members}")
        if group_penalty < 0:
            raise ConfigError(f"LPNet's group_penalty must be >= 0, got {group_penalty}")
        self.opts: dict[str, Any] = dict(
            members=members,
            hidden=hidden,
            layers=layers,
            epochs=epochs,
            lr=lr,
            weight_decay=weight_decay,
            group_penalty=group_penalty,
            seed=seed,
        )
        self._whole = [features.names.index(n) for n in _WHOLE if n in features.names]
        n_inputs = len(features.names) + len(self._whole)
        self.x_mean, self.x_std = torch.zeros(n_inputs), torch.ones(n_inputs)
        self.y_mean, self.y_std = 0.0, 1.0
        self.net = self._new_net()
        self._oof_ms = np.empty(0)  # the last fit's out-of-fold predictions (not saved)

    def _new_net(self) -> LPNet:
        with torch.random.fork_rng(devices=[]):  # seeded without touching the global random state
            torch.manual_seed(self.opts["seed"])
            net = LPNet(len(self.x_mean), members=self.opts["members"], hidden=self.opts["hidden"],
                        layers=self.opts["layers"])  # fmt: skip
        return net.eval()

    def _options(self) -> dict[str, Any]:
        return dict(self.opts)

    def _inputs(self, x: Tensor) -> Tensor:
        """(N, features) -> (N, features + logs of the whole-network ones), standardised; differentiable."""
        return (self._raw_inputs(x) - self.x_mean) / self.x_std

    def _raw_inputs(self, x: Tensor) -> Tensor:
        x = x.float()
        return torch.cat([x, torch.log(x[:, self._whole])], dim=1)

    # -- training ---------------------------------------------------------------------------------
    def _fit(self, x: Tensor, latency_ms: np.ndarray) -> None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # matrices of a few hundred rows: more threads only contend
        try:
            self._oof_ms = self._train(x, latency_ms)
        finally:
            torch.set_num_threads(threads)

    def _train(self, x: Tensor, latency_ms: np.ndarray) -> np.ndarray:
        """Train the members; returns each row's latency (ms) as predicted by the member that left it out."""
        k, n = self.opts["members"], len(latency_ms)
        y = np.log(latency_ms)
        self.y_mean, self.y_std = float(y.mean()), float(y.std() or 1.0)
        target = torch.tensor((y - self.y_mean) / self.y_std, dtype=torch.float32)
        raw = self._raw_inputs(x)
        self.x_mean, self.x_std = raw.mean(0), raw.std(0).clamp(min=1e-6)
        inputs = (raw - self.x_mean) / self.x_std  # (N, inputs)
        fold = torch.as_tensor(np.random.default_rng(self.opts["seed"]).permutation(n) % k)
        held = (fold.unsqueeze(0) == torch.arange(k).unsqueeze(1)).float()  # (K, N): member k's fold
        train = 1.0 - held
        groups = len(self.groups)  # the kept fractions are the first inputs
        self.net = self._new_net().train()
        params = list(self.net.parameters())
        opt = torch.optim.AdamW(params, lr=self.opts["lr"], weight_decay=self.opts["weight_decay"])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, self.opts["epochs"])
        for _ in range(self.opts["epochs"]):
            err = (self.net(inputs) - target) ** 2  # (K, N)
            loss = ((err * train).sum(1) / train.sum(1).clamp(min=1)).sum()
            # An L2 prior on the per-group weights, fading (1/n) as rows accumulate, as a prior should.
            penalty = (self.net.weights[0][:, :groups] ** 2).sum()
            loss = loss + self.opts["group_penalty"] * penalty / n
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        self.net.eval()
        with torch.no_grad():
            oof = (self.net(inputs) * held).sum(0)  # each row by the member that did not train on it
        return np.exp(oof.double().numpy() * self.y_std + self.y_mean)

    def _out_of_fold_ms(self, x: Tensor, latency_ms: np.ndarray) -> np.ndarray:
        return self._oof_ms  # computed by _fit: no refit needed

    # -- prediction -------------------------------------------------------------------------------
    def _members_log(self, x: Tensor) -> Tensor:
        return self.net(self._inputs(x)) * self.y_std + self.y_mean  # (K, N) log-latency

    def _predict(self, x: Tensor) -> np.ndarray:
        return torch.exp(self._members_log(x).mean(0)).numpy()

    def _log_spread(self, x: Tensor) -> tuple[np.ndarray, np.ndarray]:
        logs = self._members_log(x)
        return logs.mean(0).numpy(), logs.std(0, unbiased=True).numpy()

    def predict_fractions(self, fractions: Tensor) -> Tensor:
        """Latency (ms) of kept fractions (..., groups); differentiable, for gradient-based search."""
        flat = fractions.reshape(-1, len(self.groups))
        widths = flat * self.features.channels.to(flat.dtype)
        logs = self._members_log(self.features.from_widths(widths.double()))
        return torch.exp(logs.mean(0)).reshape(fractions.shape[:-1])

    # -- persistence ------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "x_mean": self.x_mean, "x_std": self.x_std,
                "y_mean": self.y_mean, "y_std": self.y_std}  # fmt: skip

    def _load_state(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.x_mean, self.x_std = state["x_mean"].float(), state["x_std"].float()
        self.y_mean, self.y_std = float(state["y_mean"]), float(state["y_std"])


def split_rows(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed random train/held-out row indices."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, round(n * holdout))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


__all__ = ["LPNet", "LPNetPredictor", "split_rows"]
