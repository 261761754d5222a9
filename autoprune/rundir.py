"""Run directories record the settings they ran with, so a rerun continues its own run and never mixes
another run's settings into it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from autoprune._io import write_json
from autoprune.errors import ConfigError

MAY_GROW = frozenset({"trials", "finalists", "final_epochs"})
"""Settings a resumed run may change: more trials or finalists, a longer final fine-tune."""


def _without(d: dict[str, Any], keys: frozenset[str]) -> dict[str, Any]:
    return {k: (_without(v, keys) if isinstance(v, dict) else v) for k, v in d.items() if k not in keys}


def claim_run_dir(
    run_dir: Path, command: str, settings: dict[str, Any], *, may_change: Iterable[str] = MAY_GROW
) -> None:
    """Record the settings of ``command`` in ``run_dir``; refuse when it holds a run with other ones."""
    keys = frozenset(may_change)
    path = Path(run_dir) / f"config.{command}.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if _without(old, keys) != _without(settings, keys):
            raise ConfigError(
                f"'{run_dir}' holds a {command} run with other settings: pass a new --out, or delete it"
            )
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_json(path, settings)
