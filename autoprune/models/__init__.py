"""Model registry (``create_model("resnet20")``, ``torchvision:NAME``, ``timm:NAME``, ``file.py:factory``),
checkpoints."""

from __future__ import annotations

from autoprune.models import cifar
from autoprune.models._checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from autoprune.models._load import check_forward, load_model
from autoprune.models._registry import create_model, list_models, register_model

for _name in ("resnet20", "resnet56", "vgg11_bn", "mobilenet_v2"):
    register_model(_name)(getattr(cifar, _name))

__all__ = [
    "check_forward",
    "create_model",
    "list_models",
    "load_checkpoint",
    "load_model",
    "read_checkpoint",
    "register_model",
    "save_checkpoint",
]
