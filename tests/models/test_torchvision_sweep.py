"""One small member of every torchvision classification family through autoprune's whole path: the
channel graph, physical pruning to irregular widths, a forward pass, and an ONNX export whose onnxruntime
outputs match torch's; or, for an architecture autoprune cannot prune, a one-line refusal when the graph
is built. The full list of models is swept by ``scripts/sweep_models.py`` (docs/models.md)."""

from __future__ import annotations

import pytest
from contracts.model_family import check_family

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
    check_family(f"torchvision:{name}", size, expected, tmp_path)
