"""Plots written as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from autoprune._io import atomic_write


def calibration_plot(
    path: str | Path,
    measured: np.ndarray,
    predicted: Mapping[str, np.ndarray],
    *,
    title: str,
    band: float = 0.10,
) -> Path:
    """One panel per predictor: predicted against measured latency, the diagonal and a ±``band`` band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(predicted)
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    everything = np.concatenate([measured, *predicted.values()])
    lo, hi = float(everything.min()) * 0.95, float(everything.max()) * 1.05
    line = np.linspace(lo, hi, 50)
    for ax, name in zip(axes.flat, names, strict=False):
        pred = predicted[name]
        inside = np.abs(pred / measured - 1) <= band
        ax.fill_between(line, line * (1 - band), line * (1 + band), color="0.9", label=f"±{band:.0%}")
        ax.plot(line, line, color="0.5", lw=0.8)
        ax.scatter(measured[inside], pred[inside], s=8, color="tab:blue")
        ax.scatter(measured[~inside], pred[~inside], s=8, color="tab:red")
        ax.set_title(f"{name}: {100 * inside.mean():.0f} % within", fontsize=9)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("measured ms", fontsize=8)
        ax.set_ylabel("predicted ms", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return Path(path)


def curve_plot(
    path: str | Path,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
) -> Path:
    """Lines ``name -> (x, y)`` on one axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, (x, y) in series.items():
        ax.plot(x, y, marker="o", ms=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return Path(path)


__all__ = ["calibration_plot", "curve_plot"]
