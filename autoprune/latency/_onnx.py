"""torch -> ONNX, shared by the onnxruntime backend and ``autoprune export``."""

from __future__ import annotations

import io
import warnings

import torch
from torch import Tensor, nn

OPSET = 17


def to_onnx(model: nn.Module, example_input: Tensor, *, dynamic_batch: bool = False) -> bytes:
    """Serialise ``model`` (in eval mode) to ONNX bytes with input "input" and output "logits".

    Uses the TorchScript exporter (``dynamo=False``): for these CNNs it gives the same graph as the
    dynamo exporter in ~0.1 s instead of ~3 s, which matters when a profile exports hundreds of networks.
    """
    was_training = model.training
    model.eval()
    buffer = io.BytesIO()
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter warns about its own deprecation on every call
            torch.onnx.export(
                model,
                (example_input,),
                buffer,  # type: ignore[arg-type]  # the TorchScript exporter writes to file objects too
                dynamo=False,
                opset_version=OPSET,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes=axes,
            )
    finally:
        model.train(was_training)
    return buffer.getvalue()
