"""The rerank's two shared pieces: fine-tunes cached in the study (a rerun or another worker reads them
instead of training again) and the uniform guard, which keeps a non-uniform winner only when it beats
the uniform network by more than the measured noise."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import optuna

from autoprune.graph import Widths

_FINETUNED = "screen_finetuned"  # study attribute: "widths|epochs|seed" -> validation accuracy


def widths_key(widths: Widths) -> str:
    """A network's widths as a string, the same for the same widths in any order."""
    return ",".join(str(widths[k]) for k in sorted(widths))


class Finetuned:
    """``finetune(widths, epochs, seed)`` -> validation accuracy, each result kept in ``study``."""

    def __init__(self, study: optuna.Study, finetune: Callable[[Widths, float, int], float]) -> None:
        self._study, self._finetune = study, finetune
        self._cache: dict[str, float] = dict(study.user_attrs.get(_FINETUNED, {}))

    def __call__(self, widths: Widths, epochs: float, seed: int) -> float:
        k = f"{widths_key(widths)}|{epochs:g}|{seed}"
        if k not in self._cache:
            self._cache[k] = float(self._finetune(widths, epochs, seed))
            self._study.set_user_attr(_FINETUNED, self._cache)
        return self._cache[k]


@dataclass(frozen=True)
class Guard:
    """The guard's verdict: ``winner`` is ``best`` when ``kept``, else the uniform network."""

    winner: str
    gain: float  # the best non-uniform network's mean accuracy over the uniform one's
    noise: float
    kept: bool

    def sentence(self) -> str:
        if self.kept:
            return (
                f"kept the non-uniform winner: +{100 * self.gain:.2f} pp over uniform, noise "
                f"{100 * self.noise:.2f} pp"
            )
        return (
            f"returned the uniform network: the best other was {100 * self.gain:+.2f} pp, within the "
            f"noise of {100 * self.noise:.2f} pp"
        )


def uniform_guard(seeds: dict[str, list[float]], *, uniform: str, best: str | None, val_size: int) -> Guard:
    """``seeds``: each finalist's validation accuracies over the same seeds (the uniform network's
    included). The noise is the larger of the seed-to-seed spread of the finalists (the mean of their
    seeds' absolute differences) and one standard error of a difference of two validation accuracies
    (``sqrt(2 p (1 - p) / n)``); ``best`` wins only when its mean gain over ``uniform`` exceeds it."""
    mean = {k: sum(v) / len(v) for k, v in seeds.items()}
    spread = sum(max(v) - min(v) for v in seeds.values()) / len(seeds)
    p = mean[uniform]
    se = math.sqrt(2 * p * (1 - p) / val_size) if val_size > 0 else 0.0
    noise = max(spread, se)
    gain = mean[best] - mean[uniform] if best is not None else 0.0
    kept = best is not None and gain > noise
    return Guard(best if kept and best is not None else uniform, gain, noise, kept)
