from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from contracts import covered
from contracts.export import ExportContract

from autoprune.errors import ExportError
from autoprune.export import export_onnx, list_formats
from autoprune.export import onnx as onnx_module
from autoprune.graph import ChannelGraph, apply_widths, narrowest_widths
from autoprune.latency import to_onnx
from autoprune.models import create_model


class TestOnnxFormat(ExportContract):
    name = "onnx"


def test_every_registered_format_has_a_contract_class() -> None:
    import test_tensorrt_export  # noqa: F401  (its subclass counts)

    assert set(list_formats()) == covered(ExportContract, "name")


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
    monkeypatch.setattr(
        onnx_module, "export_onnx_bytes", lambda m, x, **kw: (to_onnx(other, x, **kw), "torchscript")
    )
    with pytest.raises(ExportError, match="differs from torch"):
        export_onnx(_pruned_resnet(), [1, 3, 32, 32], tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


OPS_MODEL = """
import torch
from torch import nn


class Head(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.op = op

    def forward(self, x):
        x = x.mean((2, 3))
        if self.op == "erfinv":  # no ONNX exporter translates erfinv
            return torch.special.erfinv(torch.tanh(x) * 0.5)
        return torch.logcumsumexp(x, dim=1)  # only the dynamo exporter translates it


def net(op, num_classes=10):
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, num_classes, 1), Head(op),
    )


def dynamo_only(num_classes=10):
    return net("logcumsumexp", num_classes)


def unexportable(num_classes=10):
    return net("erfinv", num_classes)
"""


def _saved(tmp_path, factory: str):  # type: ignore[no-untyped-def]
    """A pruned network of a user's model file (pruned.pt in a run directory), as search leaves it."""
    from autoprune.prune import prune_model, save_pruned

    (tmp_path / "ops_model.py").write_text(OPS_MODEL)
    spec = f"{tmp_path / 'ops_model.py'}:{factory}"
    shape = [1, 3, 16, 16]
    pruned = prune_model(create_model(spec), widths={}, model_spec=spec, num_classes=10, input_shape=shape)
    run = tmp_path / "run"
    run.mkdir()
    save_pruned(run / "pruned.pt", pruned)
    return run, pruned


def test_an_op_only_the_dynamo_exporter_translates_is_exported_with_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, pruned = _saved(tmp_path, "dynamo_only")
    with pytest.raises(Exception, match="logcumsumexp"):  # the premise: TorchScript's exporter cannot
        to_onnx_torchscript_only(pruned.module)
    result = export_onnx(pruned.module, [1, 3, 16, 16], tmp_path / "m.onnx")
    assert result.exporter == "dynamo" and result.max_abs_diff <= result.tolerance
    x = torch.randn(3, 3, 16, 16)  # the batch axis stays dynamic
    (got,) = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.numpy()}
    )
    np.testing.assert_allclose(got, pruned.module(x).detach().numpy(), atol=1e-4, rtol=1e-3)


def to_onnx_torchscript_only(module: torch.nn.Module) -> bytes:
    from autoprune.latency._onnx import _torchscript

    return _torchscript(module.eval(), torch.zeros(1, 3, 16, 16), True)


def test_an_op_no_exporter_translates_is_one_line_naming_it_and_its_module(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, pruned = _saved(tmp_path, "unexportable")
    with pytest.raises(ExportError) as info:
        export_onnx(pruned.module, [1, 3, 16, 16], tmp_path / "m.onnx")
    message = str(info.value)
    assert "\n" not in message
    assert "'aten::erfinv'" in message and "module '4'" in message  # Head is the Sequential's 5th layer
    assert not (tmp_path / "m.onnx").exists()


def test_cli_export_of_an_unexportable_op_exits_2_with_one_line_and_writes_nothing(tmp_path, capfd) -> None:  # type: ignore[no-untyped-def]
    from autoprune.cli import main

    run, _ = _saved(tmp_path, "unexportable")
    before = sorted(p.name for p in run.iterdir())
    assert main(["export", str(run)]) == 2
    err = capfd.readouterr().err.strip()  # at the file descriptor: C++ prints bypass sys.stderr
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "aten::erfinv" in err and "replace that op" in err, err
    assert sorted(p.name for p in run.iterdir()) == before  # no model.onnx, no temporary file left


def test_weights_over_the_onnx_file_limit_are_refused_before_exporting(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from autoprune.latency import _onnx

    monkeypatch.setattr(_onnx, "PROTOBUF_LIMIT", 1000)  # resnet20's 1 MB of weights stand for > 2 GiB
    with pytest.raises(ExportError, match="over the 2 GiB an ONNX file can hold"):
        to_onnx(create_model("resnet20").eval(), torch.zeros(1, 3, 32, 32))


class _Attention(torch.nn.Module):
    """Patches through nn.MultiheadAttention, as torchvision's ViT: in eval mode at a batch of two it runs
    the fused ``_native_multi_head_attention``, which the TorchScript exporter cannot export."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 4, stride=4)
        self.att = torch.nn.MultiheadAttention(16, 2, batch_first=True)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.conv(x).flatten(2).transpose(1, 2)
        return self.fc(self.att(t, t, t, need_weights=False)[0].mean(1))


def test_the_torchscript_exporters_failure_prints_nothing_and_dynamo_takes_over(tmp_path, capfd) -> None:  # type: ignore[no-untyped-def]
    result = export_onnx(_Attention().eval(), [1, 3, 16, 16], tmp_path / "m.onnx")
    assert result.exporter == "dynamo" and result.max_abs_diff <= result.tolerance
    out, err = capfd.readouterr()  # the C++ exporter prints its whole traced graph when an op fails
    assert "graph" not in out + err, (out + err)[:500]
