"""The contract every export format passes: subclass ``ExportContract`` once per registered format
(``name``; mark it as the format's hardware needs); ``tests/export/test_onnx.py`` checks that every
registered format has one."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch

from autoprune import api
from autoprune.export import get_format, list_formats
from autoprune.graph import ChannelGraph, narrowest_widths
from autoprune.models import create_model
from autoprune.prune import prune_model, save_pruned


def saved_run(run: Path, meta: dict | None = None) -> Path:
    """A run directory holding a pruned resnet20 (half its channels per group), with the search's ``meta``."""
    x = torch.zeros(1, 3, 32, 32)
    pruned = prune_model(
        create_model("resnet20"),
        widths=narrowest_widths(ChannelGraph(create_model("resnet20"), x).groups, min_ratio=0.5),
        model_spec="resnet20",
        num_classes=10,
        input_shape=[1, 3, 32, 32],
    )
    pruned.meta = dict(meta or {})
    run.mkdir(parents=True, exist_ok=True)
    save_pruned(run / "pruned.pt", pruned)
    return run


class ExportContract:
    name: ClassVar[str]

    def test_is_registered_with_a_help_line(self) -> None:
        assert self.name in list_formats()
        fmt = get_format(self.name)
        assert fmt.name == self.name and fmt.help and "\n" not in fmt.help

    def test_writes_one_file_beside_the_run_within_its_parity_tolerance(self, tmp_path: Path) -> None:
        run = saved_run(tmp_path / "run")
        before = set(run.iterdir())
        result = api.export(run, format=self.name)
        assert result.path.is_file() and result.path.parent == run
        assert result.max_abs_diff <= result.tolerance
        written = set(run.iterdir()) - before
        assert result.path in written and not any(p.name.endswith(".tmp") for p in written)

    def test_writes_where_it_is_told(self, tmp_path: Path) -> None:
        run = saved_run(tmp_path / "run")
        out = tmp_path / "elsewhere" / "net.out"
        out.parent.mkdir()
        assert api.export(run / "pruned.pt", format=self.name, out=out).path == out and out.is_file()
