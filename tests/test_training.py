from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from autoprune.errors import ConfigError
from autoprune.training import calibration_batches, distillation_loss, train

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
