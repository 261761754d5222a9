"""The contract suites, one per plug-in kind (backend, predictor, criterion, strategy, export format).

A new plug-in is one file in the package plus one subclass of its kind's contract, naming what it covers
(``name``, ``kind`` or ``criterion_name``); each kind's test module checks, with :func:`covered`, that
every name its registry lists has a subclass."""

from __future__ import annotations


def covered(contract: type, attr: str) -> set[str]:
    """The names that ``contract``'s subclasses (at any depth, in any imported module) cover."""
    out: set[str] = set()
    todo = list(contract.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        name = cls.__dict__.get(attr)
        if isinstance(name, str):
            out.add(name)
    return out
