"""Checks of the CLI shared by several test files (tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import pytest

from autoprune.cli import main


def fails_in_one_line(capsys: pytest.CaptureFixture[str], args: list[str], expected: str) -> None:
    """``autoprune ARGS`` exits 2 with one line on stderr that contains ``expected``."""
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert expected in err, err
    assert len(err.splitlines()) == 1, err
