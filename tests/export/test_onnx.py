from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from autoprune.errors import ExportError
from autoprune.export import export_onnx
from autoprune.export import onnx as onnx_module
from autoprune.graph import ChannelGraph, apply_widths, narrowest_widths
from autoprune.latency import to_onnx
from autoprune.models import create_model


def _pruned_resnet():  # type: ignore[no-untyped-def]
    model = create_model("resnet20").eval()
    x = torch.zeros(1, 3, 32, 32)
    apply_widths(model, x, narrowest_widths(ChannelGraph(create_model("resnet20"), x).groups, min_ratio=0.5))
    return model


def test_exported_onnx_matches_torch(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = _pruned_resnet()
    result = export_onnx(model, [1, 3, 32, 32], tmp_path / "m.onnx")
    assert result.max_abs_diff <= result.tolerance
    x = torch.randn(4, 3, 32, 32)  # another batch size: the batch axis is dynamic
    (got,) = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.numpy()}
    )
    np.testing.assert_allclose(got, model(x).detach().numpy(), atol=1e-4, rtol=1e-3)


def test_failing_parity_is_an_error_and_writes_nothing(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    other = create_model("resnet20").eval()  # different random weights: outputs disagree
    monkeypatch.setattr(onnx_module, "to_onnx", lambda m, x, **kw: to_onnx(other, x, **kw))
    with pytest.raises(ExportError, match="differs from torch"):
        export_onnx(_pruned_resnet(), [1, 3, 32, 32], tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
