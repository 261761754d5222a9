from __future__ import annotations

import io
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from autoprune.data import DatasetSplits
from autoprune.errors import ConfigError
from autoprune.training import (
    TrainState,
    augment_batch,
    calibration_batches,
    distillation_loss,
    resolve_augment,
    train,
)

LOGITS = torch.randn(5, 10, generator=torch.Generator().manual_seed(0))
TEACHER = torch.randn(5, 10, generator=torch.Generator().manual_seed(1)) * 2
LABELS = torch.tensor([0, 3, 3, 9, 1])


def test_distillation_loss_is_hintons_mix() -> None:
    ce = F.cross_entropy(LOGITS, LABELS)
    torch.testing.assert_close(distillation_loss(LOGITS, TEACHER, LABELS, temperature=4, alpha=0), ce)
    assert distillation_loss(TEACHER, TEACHER, LABELS, temperature=4, alpha=1) == pytest.approx(0, abs=1e-6)
    # alpha * T² * KL(p_teacher || p_student) at temperature T, averaged over the batch
    p_t, p_s = (TEACHER / 3).softmax(1), (LOGITS / 3).softmax(1)
    kl = (p_t * (p_t.log() - p_s.log())).sum(1).mean()
    got = distillation_loss(LOGITS, TEACHER, LABELS, temperature=3, alpha=0.25)
    torch.testing.assert_close(got, 0.75 * ce + 0.25 * 9 * kl)


def small_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


def kl_to(teacher: nn.Module, student: nn.Module, x: Tensor) -> float:
    with torch.no_grad():
        return float(
            F.kl_div(
                student.eval()(x).log_softmax(1),
                teacher.eval()(x).log_softmax(1),
                log_target=True,
                reduction="batchmean",
            )
        )


def test_distilling_moves_the_student_towards_the_teacher() -> None:
    x = torch.randn(128, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    teacher, student = small_net(0), small_net(1)
    with torch.no_grad():
        teacher[-1].weight.mul_(10)  # confident, so there is something to learn
    data = TensorDataset(x, torch.zeros(128, dtype=torch.long))  # labels that alpha=1 ignores
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    before = kl_to(teacher, student, x)
    teacher.train()
    train(student, data, epochs=5, lr=0.05, batch_size=32, teacher=teacher, distill_alpha=1.0)
    assert not teacher.training  # run in eval mode: its BatchNorm statistics stay put
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_state.items())
    assert kl_to(teacher, student, x) < 0.5 * before


@pytest.mark.parametrize(("temperature", "alpha"), [(0.0, 0.5), (4.0, 1.5), (4.0, -0.1)])
def test_bad_distillation_settings(temperature: float, alpha: float) -> None:
    data = TensorDataset(torch.randn(4, 3, 8, 8), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ConfigError, match="distillation"):
        train(
            small_net(0),
            data,
            epochs=1,
            lr=0.1,
            teacher=small_net(1),
            distill_temperature=temperature,
            distill_alpha=alpha,
        )


def test_calibration_batches_are_fixed_by_the_seed() -> None:
    data = TensorDataset(torch.arange(100.0), torch.arange(100))
    a = calibration_batches(data, count=3, batch_size=10, seed=0)
    assert len(a) == 3 and all(x.shape == (10,) and torch.equal(x.long(), y) for x, y in a)
    again = calibration_batches(data, count=3, batch_size=10, seed=0)
    assert all(torch.equal(x, x2) for (x, _), (x2, _) in zip(a, again, strict=True))
    other = calibration_batches(data, count=3, batch_size=10, seed=1)
    assert not torch.equal(a[0][0], other[0][0])
    assert not torch.equal(a[0][0], torch.arange(10.0))  # shuffled
    assert len(calibration_batches(data, count=50, batch_size=10)) == 10  # no more than there are
    with pytest.raises(ConfigError, match="count >= 1"):
        calibration_batches(data, count=0)


# ---------------------------------------------------------------- augmentation


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _windows(x: Tensor, pad: int) -> list[tuple[int, int, bool, Tensor]]:
    """Every (top, left, flipped, crop) that ``augment_batch`` may return for one image x (C, H, W)."""
    h, w = x.shape[1:]
    padded = F.pad(x, (pad, pad, pad, pad))
    out = []
    for top in range(2 * pad + 1):
        for left in range(2 * pad + 1):
            crop = padded[:, top : top + h, left : left + w]
            out += [(top, left, False, crop), (top, left, True, crop.flip(-1))]
    return out


def test_augment_batch_crops_from_zero_padding_and_flips_per_sample() -> None:
    x = torch.randn(64, 3, 8, 8, generator=_gen(0)) + 5  # no pixel is 0: the padding shows
    out = augment_batch(x, generator=_gen(1), pad=4)
    assert out.shape == x.shape and out.dtype == x.dtype
    seen = set()
    for image, got in zip(x, out, strict=True):
        matches = [(t, left, f) for t, left, f, crop in _windows(image, 4) if torch.equal(crop, got)]
        assert len(matches) == 1  # exactly one crop of the zero-padded image, flipped or not
        seen.add(matches[0])
    assert any(f for _, _, f in seen) and any(not f for _, _, f in seen)  # flips happen, not always
    assert any((t, left) != (4, 4) for t, left, _ in seen)  # shifted crops happen
    assert len(seen) > 32  # per sample, not one choice for the whole batch
    assert (out == 0).any()  # zero padding came in


def test_augment_batch_is_fixed_by_the_generator() -> None:
    x = torch.randn(16, 3, 8, 8, generator=_gen(0))
    a, again = augment_batch(x, generator=_gen(3)), augment_batch(x, generator=_gen(3))
    assert torch.equal(a, again)
    assert not torch.equal(a, augment_batch(x, generator=_gen(4)))
    assert not torch.equal(a, x)
    flipped_only = augment_batch(x, generator=_gen(3), pad=0)  # no room to shift: each image or its mirror
    assert all(torch.equal(o, i) or torch.equal(o, i.flip(-1)) for o, i in zip(flipped_only, x, strict=True))


def _labelled_images(n: int = 40, size: int = 16) -> TensorDataset:
    """Constant images whose value is the label + 1: the centre (never padding) tells the label."""
    y = torch.arange(n) % 10
    return TensorDataset((y.float() + 1)[:, None, None, None].expand(n, 3, size, size).clone(), y)


def test_training_augments_each_batch_and_keeps_its_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    inputs: list[Tensor] = []
    labels: list[Tensor] = []

    class Spy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = small_net(0)

        def forward(self, x: Tensor) -> Tensor:
            inputs.append(x.clone())
            return self.net(x)

    cross_entropy = F.cross_entropy

    def spy_loss(logits: Tensor, y: Tensor) -> Tensor:
        labels.append(y.clone())
        return cross_entropy(logits, y)

    monkeypatch.setattr(F, "cross_entropy", spy_loss)
    data = _labelled_images()
    train(Spy(), data, epochs=2, lr=0.01, batch_size=8, augment=True)
    assert len(inputs) == len(labels) == 10
    padded = 0
    for x, y in zip(inputs, labels, strict=True):
        assert x.shape == (8, 3, 16, 16)
        centre = (y.float() + 1)[:, None, None, None].expand(8, 3, 8, 8)  # within 4 pixels of no edge
        torch.testing.assert_close(x[:, :, 4:12, 4:12], centre)
        padded += int((x == 0).flatten(1).any(1).sum())
    assert padded > 0  # crops from the padding happened
    inputs.clear()
    labels.clear()
    train(Spy(), data, epochs=1, lr=0.01, batch_size=8)  # off by default: the images as they are
    assert all(not (x == 0).any() for x in inputs)


def test_the_seed_fixes_the_augmentation_and_the_order() -> None:
    data = TensorDataset(torch.randn(64, 3, 8, 8, generator=_gen(5)), torch.arange(64) % 10)

    def weights(*, seed: int, augment: bool) -> list[Tensor]:
        net = small_net(0)
        train(net, data, epochs=2, lr=0.05, batch_size=16, seed=seed, augment=augment)
        return [p.detach().clone() for p in net.parameters()]

    a = weights(seed=1, augment=True)
    assert all(torch.equal(p, q) for p, q in zip(a, weights(seed=1, augment=True), strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a, weights(seed=2, augment=True), strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a, weights(seed=1, augment=False), strict=True))


def _splits(*, fits: bool | None) -> DatasetSplits:
    data: Any = TensorDataset(torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.long))
    if fits is None:
        return DatasetSplits("toy", data, data, data, 2, (3, 8, 8))
    return DatasetSplits("toy", data, data, data, 2, (3, 8, 8), augment_fits=fits)


def test_resolve_augment_follows_the_data_unless_asked() -> None:
    assert resolve_augment(None, _splits(fits=True)) is True
    assert resolve_augment(None, _splits(fits=False)) is False
    assert resolve_augment(True, _splits(fits=False)) is True  # the user's choice
    assert resolve_augment(False, _splits(fits=True)) is False
    assert _splits(fits=None).augment_fits is False  # a loader that does not say: no augmentation


# ---------------------------------------------------------------- resume


class _Stop(Exception):
    pass


def _dropout_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    layers = list(small_net(seed).children())[:-1]
    return nn.Sequential(*layers, nn.Dropout(0.3), nn.Linear(8, 10))  # dropout draws from the global RNG


@pytest.mark.parametrize("epochs", [3, 2.5])
def test_a_run_continued_from_an_epochs_state_ends_as_an_uninterrupted_one(epochs: float) -> None:
    data = TensorDataset(torch.randn(60, 3, 8, 8, generator=_gen(6)), torch.arange(60) % 10)
    options: dict[str, Any] = {"epochs": epochs, "lr": 0.1, "batch_size": 16, "seed": 3, "augment": True}

    whole = _dropout_net(0)
    torch.manual_seed(123)
    states: list[int] = []
    train(whole, data, **options, on_epoch=lambda s: states.append(s["step"]))
    assert states == [4, 8] + ([12] if epochs == 3 else [])  # after each complete pass: 4 batches each

    saved = io.BytesIO()

    def stop_after_first(state: TrainState) -> None:
        torch.save(state, saved)  # serialised at once, as the contract asks
        raise _Stop

    stopped = _dropout_net(0)
    torch.manual_seed(123)
    with pytest.raises(_Stop):
        train(stopped, data, **options, on_epoch=stop_after_first)
    saved.seek(0)
    state = torch.load(saved, weights_only=True)
    torch.manual_seed(999)  # another process: its global RNG is anywhere
    resumed = _dropout_net(7)  # and its model freshly made: the state holds the weights
    train(resumed, data, **options, state=state)
    for (name, p), q in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, msg=name)
    with pytest.raises(ConfigError, match="steps"):
        train(_dropout_net(0), data, **{**options, "epochs": 4}, state=state)
