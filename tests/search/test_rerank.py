"""The uniform guard and the study-cached fine-tunes of the rerank."""

from __future__ import annotations

import math

import optuna
import pytest

from autoprune.search.rerank import Finetuned, uniform_guard


def test_the_guard_keeps_a_winner_only_beyond_the_seed_spread() -> None:
    # spread: (|0.80 - 0.82| + |0.78 - 0.79|) / 2 = 0.015; gain 0.81 - 0.785 = 0.025 > 0.015
    kept = uniform_guard({"b": [0.80, 0.82], "u": [0.78, 0.79]}, uniform="u", best="b", val_size=0)
    assert kept.kept and kept.winner == "b"
    assert kept.gain == pytest.approx(0.025) and kept.noise == pytest.approx(0.015)
    # the same gain with a wider spread is noise
    within = uniform_guard({"b": [0.76, 0.86], "u": [0.78, 0.79]}, uniform="u", best="b", val_size=0)
    assert not within.kept and within.winner == "u" and "returned the uniform network" in within.sentence()


def test_the_guard_noise_is_at_least_the_standard_error_of_two_validation_accuracies() -> None:
    guard = uniform_guard({"b": [0.81, 0.81], "u": [0.79, 0.79]}, uniform="u", best="b", val_size=100)
    assert guard.noise == pytest.approx(math.sqrt(2 * 0.79 * 0.21 / 100))
    assert not guard.kept  # +2 pp on 100 items is within one standard error (5.8 pp)
    alone = uniform_guard({"u": [0.7, 0.72]}, uniform="u", best=None, val_size=100)
    assert alone.winner == "u" and not alone.kept and alone.gain == 0.0


def test_fine_tunes_are_kept_in_the_study_and_read_back_by_a_new_reader() -> None:
    study = optuna.create_study()
    calls: list[tuple[int, float, int]] = []

    def finetune(widths: dict[str, int], epochs: float, seed: int) -> float:
        calls.append((widths["a"], epochs, seed))
        return widths["a"] / 10 + seed

    first = Finetuned(study, finetune)
    assert first({"a": 3, "b": 1}, 0.5, 1) == pytest.approx(1.3)
    assert first({"b": 1, "a": 3}, 0.5, 1) == pytest.approx(1.3)  # the same network in another order
    again = Finetuned(study, lambda *_: pytest.fail("trained again"))
    assert again({"a": 3, "b": 1}, 0.5, 1) == pytest.approx(1.3)
    assert calls == [(3, 0.5, 1)]
    assert first({"a": 3, "b": 1}, 1.5, 1) == pytest.approx(1.3) and len(calls) == 2  # other epochs: trained


def test_fallbacks_are_the_same_shape_scaled_under_each_lower_level() -> None:
    from contracts.strategy import BUDGET, SPACE, latency

    from autoprune.search.allocation import scaled_down

    widths = SPACE.widest_uniform_within(BUDGET, latency)
    lower = scaled_down(SPACE, widths, latency, budget_ms=BUDGET, fallbacks=4, step=0.05)
    assert 1 <= len(lower) <= 4
    seen = [w for w, _ in lower]
    assert widths not in seen and len({tuple(sorted(w.items())) for w in seen}) == len(seen)
    for w, ms in lower:
        assert ms == latency(w) <= BUDGET * (1 - 0.05)  # under the first level at least
        assert all(w[g] <= widths[g] for g in widths)  # scaled down, never wider
    assert [ms for _, ms in lower] == sorted((ms for _, ms in lower), reverse=True)
    assert scaled_down(SPACE, widths, latency, budget_ms=BUDGET, fallbacks=0) == []
