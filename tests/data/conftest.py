"""Every tests/data test starts with an empty dataset cache, and the cache it fills is dropped after."""

from __future__ import annotations

from collections import OrderedDict

import pytest

from autoprune.data import _registry


@pytest.fixture(autouse=True)
def fresh_dataset_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace the registry's cache by an empty one for the test (the old one comes back after)."""
    monkeypatch.setattr(_registry, "_CACHE", OrderedDict())
