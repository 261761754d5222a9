"""The plug-in registry: a missing package is one line naming it; a broken autoprune module is not
disguised as one."""

from __future__ import annotations

import pytest

from autoprune._registry import Registry
from autoprune.errors import ConfigError


def test_a_plug_in_whose_package_is_missing_names_it_in_one_line() -> None:
    reg: Registry[object] = Registry("widget", {"w": "no_such_package_xyz.sub:Widget"})
    with pytest.raises(ConfigError) as err:
        reg.get("w")
    assert "\n" not in str(err.value) and "(no_such_package_xyz)" in str(err.value)


def test_a_plug_in_of_autoprune_that_fails_to_import_raises_its_own_error() -> None:
    reg: Registry[object] = Registry("widget", {"w": "autoprune.no_such_module_xyz:Widget"})
    with pytest.raises(ModuleNotFoundError, match=r"autoprune\.no_such_module_xyz"):
        reg.get("w")
