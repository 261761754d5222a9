"""The family tests' one check (torchvision and timm): a model through autoprune's whole path (the
channel graph, physical pruning to irregular widths, a forward pass, an ONNX export whose onnxruntime
outputs match torch's), or a one-line refusal."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from autoprune.errors import AutopruneError
from autoprune.export import export_onnx
from autoprune.graph import allowed_widths
from autoprune.models import create_model
from autoprune.prune import prune_model
from autoprune.search.criteria import channel_scores


def check_family(spec: str, size: int, expected: str, tmp_path: Path) -> None:
    """``spec`` at ``size`` x ``size`` either works or is refused in one line, as ``expected`` says."""
    torch.manual_seed(0)
    shape = [1, 3, size, size]
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
        assert expected == "refused", f"{spec} was refused: {exc}"
        assert "\n" not in str(exc) and ": " in str(exc)  # one line that ends with what to do
        return
    assert expected == "works", f"{spec} was expected to be refused"
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
