"""The one recipe every plug-in kind follows (latency backends, predictors, importance criteria, search
strategies, export formats): an ABC in the kind's ``_base.py``, built-ins named here as lazy
``"module:Class"`` targets (imported on first use, so ``import autoprune`` stays light and an optional
dependency is needed only by what uses it), more added with ``register`` (a class decorator) or
``register_target``, and ``names()`` for the CLI's ``--help`` and its errors."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from autoprune.errors import ConfigError

T = TypeVar("T")
C = TypeVar("C", bound=type)


class Registry(Generic[T]):
    """Name-keyed plug-ins of one kind. ``what`` names the kind in errors ("latency backend"); a class's
    name is its attribute ``key`` ("name"); ``builtins`` maps names to ``"module:Class"``; ``names()`` is
    sorted unless ``ordered`` (then in the order given, built-ins first)."""

    def __init__(self, what: str, builtins: Mapping[str, str], *, key: str = "name", ordered: bool = False):
        self.what, self.key, self.ordered = what, key, ordered
        self._targets: dict[str, str] = dict(builtins)
        self._classes: dict[str, type[T]] = {}

    def register(self, cls: C) -> C:
        """Class decorator: make ``cls`` available under its ``key`` attribute."""
        name = getattr(cls, self.key, None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls.__qualname__} needs a class attribute `{self.key}` to be registered")
        taken = self._classes.get(name)
        if taken is not None and taken.__qualname__ != cls.__qualname__:
            raise ValueError(f"{self.what} name '{name}' is already taken by {taken.__qualname__}")
        self._classes[name] = cls
        return cls

    def register_target(self, name: str, target: str) -> None:
        """Register ``"package.module:Class"`` under ``name``, imported when first asked for."""
        if ":" not in target:
            raise ValueError(f"a {self.what} target is 'package.module:Class', got '{target}'")
        self._targets[name] = target
        self._classes.pop(name, None)

    def unregister(self, name: str) -> None:
        """Forget ``name`` (a plug-in registered for a while, as tests do)."""
        self._targets.pop(name, None)
        self._classes.pop(name, None)

    def names(self) -> list[str]:
        merged = list(dict.fromkeys([*self._targets, *self._classes]))
        return merged if self.ordered else sorted(merged)

    def __contains__(self, name: object) -> bool:
        return name in self._targets or name in self._classes

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``, imported on first use."""
        if name not in self._classes and name in self._targets:
            module_name, _, attr = self._targets[name].partition(":")
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                if exc.name is None or exc.name.partition(".")[0] == "autoprune":
                    raise  # autoprune's own code is broken, not a missing package: say so as it is
                raise ConfigError(
                    f"{self.what} '{name}' needs a package that is not installed ({exc.name}): install it"
                ) from exc
            self._classes[name] = getattr(module, attr)
        if name not in self._classes:
            raise ConfigError(f"unknown {self.what} '{name}': use one of {', '.join(self.names())}")
        return self._classes[name]

    def create(self, name: str, *args: Any, **options: Any) -> T:
        """A new instance of ``name`` with ``options``; options it does not take are refused in one line
        (checked against its signature, so a TypeError inside it is not mistaken for one)."""
        cls = self.get(name)
        try:
            inspect.signature(cls).bind(*args, **options)
        except TypeError as exc:
            raise ConfigError(
                f"{self.what} '{name}' does not take these options {sorted(options)} ({exc}): drop them"
            ) from None
        return cls(*args, **options)
