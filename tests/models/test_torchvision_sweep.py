"""One small member of every torchvision classification family through autoprune's whole path: the
channel graph, physical pruning to irregular widths, a forward pass, and an ONNX export whose onnxruntime
outputs match torch's; or, for an architecture autoprune cannot prune, a one-line refusal when the graph
is built. The full list of models is swept by ``scripts/sweep_models.py`` (docs/models.md)."""

from __future__ import annotations

import random

import pytest
import torch

from autoprune.errors import AutopruneError
from autoprune.export import export_onnx
from autoprune.graph import allowed_widths
from autoprune.models import create_model
from autoprune.prune import prune_model
from autoprune.search.criteria import channel_scores

# model -> (input size, what autoprune does with it): the smallest member of each family, at 64x64
# unless it cannot run that small. The self-attention families (ViT, Swin, MaxViT) are refused before
# tracing (tracing Swin or MaxViT took Torch-Pruning minutes and gigabytes before it failed).
FAMILIES = {
    "resnet18": (64, "works"),
    "resnext50_32x4d": (64, "works"),
    "wide_resnet50_2": (64, "works"),
    "regnet_x_400mf": (64, "works"),
    "regnet_y_400mf": (64, "works"),
    "mobilenet_v2": (64, "works"),
    "mobilenet_v3_small": (64, "works"),
    "efficientnet_b0": (64, "works"),
    "efficientnet_v2_s": (64, "works"),
    "mnasnet0_5": (64, "works"),
    "shufflenet_v2_x0_5": (64, "refused"),
    "squeezenet1_1": (64, "works"),
    "densenet121": (64, "works"),
    "googlenet": (64, "works"),
    "inception_v3": (75, "works"),
    "alexnet": (64, "works"),
    "vgg11": (64, "works"),
    "convnext_tiny": (64, "works"),
    "vit_b_32": (224, "refused"),
    "swin_t": (64, "refused"),
    "maxvit_t": (224, "refused"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_torchvision_family_is_pruned_and_exported_or_refused_in_one_line(name: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    size, expected = FAMILIES[name]
    torch.manual_seed(0)
    spec, shape = f"torchvision:{name}", [1, 3, size, size]
    dense = create_model(spec, num_classes=10).eval()
    _realistic(dense, shape)
    rng = random.Random(0)  # a different width per group, from 25 % to all of its channels
    try:
        scores = channel_scores(dense, torch.zeros(*shape), "l1")  # builds the channel graph
        widths = {g: rng.choice(allowed_widths(len(s), min_ratio=0.25)) for g, s in scores.items()}
        pruned = prune_model(
            dense, widths=widths, model_spec=spec, num_classes=10, input_shape=shape, scores=scores
        )
    except AutopruneError as exc:
        assert expected == "refused", f"{name} was refused: {exc}"
        assert "\n" not in str(exc) and ": " in str(exc)  # one line that ends with what to do
        return
    assert expected == "works", f"{name} was expected to be refused"
    assert pruned.widths == widths
    x = torch.randn(2, *shape[1:])
    with torch.no_grad():
        out = pruned.module(x)
    assert out.shape == (2, 10) and bool(out.isfinite().all())
    assert float(out.abs().max()) > 1e-3  # logits large enough for the parity check to mean something
    result = export_onnx(pruned.module, shape, tmp_path / "m.onnx")  # checks onnxruntime against torch
    assert result.path.is_file() and result.max_abs_diff <= result.tolerance


def _realistic(net: torch.nn.Module, shape: list[int]) -> None:
    """Untrained networks in eval mode can give logits of 1e-13 (EfficientNet, MobileNetV3), where any
    ONNX graph passes a parity check; BatchNorm statistics of one random batch and random all-zero weights
    (ViT's head) give logits of order one, as a trained network's."""
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() > 1 and not bool(p.any()):
                p.normal_(0.0, 0.02)
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None  # the statistics of the batch seen
                m.train()  # only BatchNorm: no auxiliary heads (Inception's), no dropout
        net(torch.randn(8, *shape[1:], generator=torch.Generator().manual_seed(0)))
        net.eval()
