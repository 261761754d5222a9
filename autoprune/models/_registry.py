"""Model specs -> modules: built-in names, ``torchvision:NAME``, ``timm:NAME``, ``file.py:factory``."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path

from torch import nn

from autoprune.errors import ModelError
from autoprune.models._timm import timm_model

ModelFactory = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: make ``create_model(name)`` call the factory (which takes ``num_classes``)."""

    def add(factory: ModelFactory) -> ModelFactory:
        _REGISTRY[name] = factory
        return factory

    return add


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(spec: str, *, num_classes: int = 10) -> nn.Module:
    """Build an untrained model from a spec; unknown or broken specs raise a one-line ModelError (a
    library a source needs but is not installed: a one-line ConfigError naming the install)."""
    if spec in _REGISTRY:
        return _REGISTRY[spec](num_classes=num_classes)
    prefix, _, name = spec.partition(":")
    if prefix in SOURCES:
        return SOURCES[prefix](name, num_classes)
    if ".py:" in spec:
        path, _, factory = spec.rpartition(":")
        return _file_model(Path(path), factory, num_classes)
    raise ModelError(
        f"unknown model '{spec}': use one of {', '.join(list_models())}, "
        f"{', '.join(f'{p}:NAME' for p in SOURCES)}, or path/to/file.py:factory"
    )


def _torchvision_model(name: str, num_classes: int) -> nn.Module:
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise ModelError(
            f"torchvision has no classification model '{name}': use one of torchvision.models.list_models()"
        )
    # weights=None: nothing is ever downloaded; the user's checkpoint supplies trained weights.
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


# Which library builds a ``PREFIX:NAME`` spec: each builder takes (name, num_classes), imports its library
# only when called, and builds untrained (weights come from the user's checkpoint; nothing is downloaded).
SOURCES: dict[str, Callable[[str, int], nn.Module]] = {
    "torchvision": _torchvision_model,
    "timm": timm_model,  # optional: pip install "autoprune[timm]"
}


def _file_model(path: Path, factory_name: str, num_classes: int) -> nn.Module:
    if not path.is_file():
        raise ModelError(f"model file '{path}' does not exist: give an existing path/to/file.py:factory")
    module_name = f"autoprune_user_model_{abs(hash(path.resolve()))}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ModelError(f"cannot import '{path}': give a Python source file as path/to/file.py:factory")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:  # the user's file: any failure is theirs to fix
        raise ModelError(f"importing '{path}' failed ({type(exc).__name__}: {exc}): fix that file") from exc
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise ModelError(
            f"'{path}' defines no callable '{factory_name}': name a factory that returns a model"
        )
    accepts_classes = "num_classes" in inspect.signature(factory).parameters
    try:
        model = factory(num_classes=num_classes) if accepts_classes else factory()
    except Exception as exc:
        raise ModelError(f"{path}:{factory_name}() raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"{path}:{factory_name}() returned {type(model).__name__}, not a torch.nn.Module")
    return model
