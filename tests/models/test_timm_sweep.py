"""``timm:NAME`` models: built through the registry (untrained, with the requested classes), a one-line
error for an unknown name or a missing timm, and one small member of each convolutional timm family
through autoprune's whole path (the channel graph, physical pruning to irregular widths, a forward pass,
an ONNX export whose onnxruntime outputs match torch's) or a one-line refusal. The longer list is swept
by ``scripts/sweep_models.py --source timm`` (docs/models-timm.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from contracts.model_family import check_family

from autoprune.errors import ConfigError, ModelError
from autoprune.models import create_model, load_model


def test_a_timm_name_builds_untrained_with_the_requested_classes() -> None:
    pytest.importorskip("timm")
    net, classes = load_model("timm:resnet18", num_classes=7)
    assert classes == 7 and net.get_classifier().out_features == 7  # type: ignore[operator]
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 7)


def test_an_unknown_timm_name_is_refused_in_one_line_with_close_names() -> None:
    pytest.importorskip("timm")
    with pytest.raises(ModelError) as err:
        create_model("timm:resnet81")
    assert "\n" not in str(err.value) and "'resnet81'" in str(err.value) and "resnet18" in str(err.value)


def test_a_missing_timm_names_the_install_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    with pytest.raises(ConfigError) as err:
        create_model("timm:resnet18")
    assert "\n" not in str(err.value) and 'pip install "autoprune[timm]"' in str(err.value)


def test_an_unknown_spec_lists_timm_among_the_sources() -> None:
    with pytest.raises(ModelError, match="timm:NAME"):
        create_model("no_such_model")


# model -> (input size, what autoprune does with it): the smallest member of each family that the sweep
# found to work, at 64x64 unless it cannot run that small, and the refusals that end in one line.
# Res2Net (works, but 15-50 s here) and RexNet (Torch-Pruning's group search does not end) are left out:
# see docs/models-timm.md.
FAMILIES = {
    "resnet10t": (64, "works"),  # resnet
    "resnetv2_50": (64, "works"),  # resnetv2 (pre-activation)
    "resnext26ts": (64, "works"),  # byobnet's ResNeXt
    "regnetx_002": (64, "works"),
    "efficientnet_b0": (64, "works"),
    "mobilenetv3_small_100": (64, "works"),  # squeeze-excitation, hard-swish
    "dla34": (64, "works"),
    "convnext_atto": (64, "works"),
    "repvgg_a0": (64, "works"),  # byobnet's RepVGG
    "hrnet_w18_small": (64, "works"),
    "ese_vovnet19b_dw": (64, "works"),
    "inception_v3": (75, "works"),
    "xception41": (64, "works"),
    "dpn68": (64, "refused"),  # dual-path torch.cat Torch-Pruning cannot map
    "mixnet_s": (64, "works"),  # MixedConv2d splits its input by stored channel counts: those groups dense
    "cspresnet50": (64, "works"),  # a channel split: the groups through it stay dense
    "ghostnet_100": (64, "refused"),  # a pruned group empties the primary conv: see docs/models-timm.md
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_timm_family_is_pruned_and_exported_or_refused_in_one_line(name: str, tmp_path: Path) -> None:
    pytest.importorskip("timm")
    size, expected = FAMILIES[name]
    check_family(f"timm:{name}", size, expected, tmp_path)
