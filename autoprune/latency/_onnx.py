"""torch -> ONNX, shared by the onnxruntime backend and ``autoprune export``."""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from autoprune.errors import ExportError

OPSET = 17
DYNAMO_OPSET = 18  # the dynamo exporter's own opset (it converts to older ones through a version adapter)
PROTOBUF_LIMIT = 2**31  # one ONNX file holds at most 2 GiB: weights beyond go to external data files


def to_onnx(model: nn.Module, example_input: Tensor, *, dynamic_batch: bool = False) -> bytes:
    """Serialise ``model`` (in eval mode) to ONNX bytes with input "input" and output "logits"."""
    return export_onnx_bytes(model, example_input, dynamic_batch=dynamic_batch)[0]


def export_onnx_bytes(
    model: nn.Module, example_input: Tensor, *, dynamic_batch: bool = False, exporter: str = "auto"
) -> tuple[bytes, str]:
    """ONNX bytes of ``model`` and the exporter that made them ("torchscript" or "dynamo").

    With ``exporter="auto"`` the TorchScript exporter (``dynamo=False``) comes first: for these CNNs it
    gives the same graph as the dynamo exporter in ~0.1 s instead of ~3 s, which matters when a profile
    exports hundreds of networks. An op it cannot export (e.g. ``torch.fft.rfft``, ``logcumsumexp``) is
    tried again with the dynamo exporter; when both fail, ExportError names the op and the module that
    calls it. ``exporter="dynamo"`` uses the dynamo exporter alone (a raw failure propagates).
    """
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    size += sum(b.numel() * b.element_size() for b in model.buffers())
    if size >= PROTOBUF_LIMIT:
        raise ExportError(
            f"the network's weights take {size / 2**30:.2f} GiB, over the 2 GiB an ONNX file can hold: "
            "prune it further, or export it yourself with torch.onnx.export(..., external_data=True)"
        )
    if dynamic_batch and example_input.shape[0] == 1:
        # Traced at a batch of one, exporters may fix shapes that hold only there (a reshape to the
        # tokens of one image in torchvision's ViT): trace at two, the same for every other network.
        example_input = torch.cat([example_input, example_input])
    was_training = model.training
    model.eval()
    try:
        if exporter == "dynamo":
            return _dynamo(model, example_input, dynamic_batch), "dynamo"
        try:
            return _torchscript(model, example_input, dynamic_batch), "torchscript"
        except Exception as first:
            try:
                return _dynamo(model, example_input, dynamic_batch), "dynamo"
            except Exception as second:
                raise ExportError(_unsupported(model, example_input, first, second)) from first
    finally:
        model.train(was_training)


def _axes(dynamic_batch: bool) -> dict[str, dict[int, str]] | None:
    return {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None


@contextlib.contextmanager
def _silent_output() -> Iterator[None]:
    """Send file descriptors 1 and 2 to nowhere: the TorchScript exporter's C++ side prints the whole
    traced graph when an op fails (its log switch is always on), which would bury our one-line error."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in (1, 2)]
    try:
        with open(os.devnull, "w") as null:
            for fd in (1, 2):
                os.dup2(null.fileno(), fd)
            yield
    finally:
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


def _torchscript(model: nn.Module, example_input: Tensor, dynamic_batch: bool) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad(), _silent_output():
        warnings.simplefilter("ignore")  # the exporter warns about its own deprecation on every call
        torch.onnx.export(
            model,
            (example_input,),
            buffer,  # type: ignore[arg-type]  # the TorchScript exporter writes to file objects too
            dynamo=False,
            opset_version=OPSET,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes=_axes(dynamic_batch),
        )
    return buffer.getvalue()


def _dynamo(model: nn.Module, example_input: Tensor, dynamic_batch: bool) -> bytes:
    chatter = io.StringIO()  # the dynamo exporter prints its progress
    with (
        warnings.catch_warnings(),
        torch.no_grad(),
        contextlib.redirect_stdout(chatter),
        contextlib.redirect_stderr(chatter),
    ):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example_input,),
            dynamo=True,
            opset_version=DYNAMO_OPSET,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes=_axes(dynamic_batch),
            verbose=False,
            report=False,
        )
    if program is None:
        raise RuntimeError("the dynamo exporter returned no program")
    return bytes(program.model_proto.SerializeToString())


def _unsupported(model: nn.Module, example_input: Tensor, first: Exception, second: Exception) -> str:
    """One line: the op neither exporter could translate, the module that runs it, and what to do."""
    found = re.search(r"operator '([\w:.]+)'", str(first)) or re.search(
        r"OpOverload\(op='([\w.]+)'", str(second)
    )
    if found is None:
        detail = " ".join(str(first).split())[:150]
        return (
            f"torch.onnx cannot export this network ({type(first).__name__}: {detail}; the dynamo exporter "
            f"failed too: {type(second).__name__}): replace the op it names, or export for another backend"
        )
    op = found.group(1)
    module = _module_running(model, example_input, op)
    where = f" in module '{module}'" if module else (" in the model's own forward" if module == "" else "")
    return (
        f"ONNX cannot express op '{op}'{where}: neither torch.onnx exporter (TorchScript, dynamo) translates "
        "it; replace that op in the model with ONNX-exportable ones, or use the torch backend instead of ONNX"
    )


def _module_running(model: nn.Module, example_input: Tensor, op: str) -> str | None:
    """The qualified name of the innermost module whose forward runs aten op ``op`` (e.g. "aten::erfinv"),
    "" for the top-level forward, None when it cannot be found."""
    try:
        from torch.utils._python_dispatch import TorchDispatchMode
    except ImportError:  # pragma: no cover - a private module of torch
        return None
    wanted = op.split("::")[-1].split(".")[-1].replace("erf_inv", "erfinv")
    stack: list[str] = []
    hit: list[str] = []

    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if not hit and name in (wanted, f"{wanted}_"):
                hit.append(stack[-1] if stack else "")
            return func(*args, **(kwargs or {}))

    def enter(name: str) -> Callable[..., None]:
        return lambda _m, _i: stack.append(name)

    def leave(_m: nn.Module, _i: object, _o: object) -> None:
        stack.pop()  # (a forward hook that returns a value would replace the module's output)

    hooks = []
    for name, m in model.named_modules():
        hooks.append(m.register_forward_pre_hook(enter(name)))
        hooks.append(m.register_forward_hook(leave))
    try:
        with torch.no_grad(), Spy():
            model(example_input)
    except Exception:
        return None
    finally:
        for h in hooks:
            h.remove()
    return hit[0] if hit else None
