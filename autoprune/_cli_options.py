"""The pieces the command line's parsers are built from: an option whose type and default come from where
they are declared (a config field or an API parameter), configs built back from the parsed options, and
the options several subcommands share."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import types
import typing
from typing import Any, TypeVar

C = TypeVar("C")


def input_shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) != 4 or min(dims) < 1:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a shape like 1x3x32x32 (batch x channels x height x width)"
        )
    return dims


def _declared(owner: Any, name: str) -> tuple[Any, Any]:
    """The type and default of field ``name`` of config dataclass ``owner``, or of parameter ``name`` of
    function ``owner``: where they are declared, the one place they live."""
    if dataclasses.is_dataclass(owner):
        hints = typing.get_type_hints(owner)
        f = next(f for f in dataclasses.fields(owner) if f.name == name)
        factory: Any = f.default_factory
        default = f.default if f.default is not dataclasses.MISSING else factory()
        return hints[name], default
    param = inspect.signature(owner).parameters[name]
    try:
        return typing.get_type_hints(owner)[name], param.default
    except NameError:  # an annotation only a type checker imports
        return type(param.default), param.default


def _scalar(hint: Any) -> Any:
    """int, float, str, bool or tuple from a hint such as ``float | None`` or ``tuple[str, ...] | None``."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if args and typing.get_origin(hint) in (typing.Union, types.UnionType) else hint
    return typing.get_origin(base) or base


def opt(p: Any, owner: Any, name: str, help: str = "", *, flag: str | None = None, **kwargs: Any) -> None:
    """The option for ``owner``'s ``name`` (a config field or an API parameter): its type and default from
    the declaration, its help ending with the default. A boolean that defaults to on is ``--no-NAME``."""
    hint, default = _declared(owner, name)
    kind = _scalar(hint)
    dashed = name.replace("_", "-")
    if kind is bool and default is True:
        kwargs.update(action="store_false")
        flag = flag or f"--no-{dashed}"
    elif kind is bool:
        kwargs.update(action="store_true")
    elif kind is tuple:
        kwargs.update(nargs="+")
    else:
        kwargs.setdefault("type", kind)
    if default is not None and kind is not bool:
        help = f"{help} (default: {default})" if help else f"default: {default}"
    p.add_argument(flag or f"--{dashed}", dest=name, default=default, help=help.replace("%", "%%"), **kwargs)


def config_from(cls: type[C], args: argparse.Namespace, **given: Any) -> C:
    """``cls`` from the parsed options named as its fields (lists as tuples), and ``given``."""
    values = {
        f.name: tuple(v) if isinstance(v := getattr(args, f.name), list) else v
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if hasattr(args, f.name) and f.name not in given
    }
    return cls(**values, **given)


def augment_flag(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"random crop (4-pixel zero padding) and horizontal flip of {what} (default: on for "
        "cifar10 and imagefolder data, off for digits, mnist and fashion-mnist)",
    )


def trials_help() -> str:
    """What ``--trials`` counts under each strategy, and its default there, from the registry."""
    from autoprune.search import list_strategies, strategy_class

    each = "; ".join(
        f"{n}: {strategy_class(n).trial_means} ({strategy_class(n).default_trials})"
        for n in list_strategies()
    )
    return f"how many trials; what a trial is and the default depend on --strategy: {each}"
