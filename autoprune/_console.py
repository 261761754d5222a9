"""Progress and messages of long runs: silent through the Python API, rich bars in the CLI."""

from __future__ import annotations

import sys
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

# Not a terminal (a log file, CI): rich would assume 80 columns and squeeze the wide tables. Tables may
# keep that width; messages never wrap (see ``say``), so a user can grep a log for them.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)


def say(message: str, *, out: Console = console) -> None:
    """Print a one-line message as it is: never hard-wrapped, no markup or highlighting applied."""
    out.print(message, soft_wrap=True, markup=False, highlight=False)


class Reporter:
    """Receives progress of long runs. The base class ignores it."""

    def task(self, description: str) -> Callable[[int, int], None]:
        """A callback ``(done, total)`` for one stage's progress."""
        return lambda done, total: None

    def log(self, message: str) -> None:
        """A one-line message between stages."""


class RichReporter(Reporter):
    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def task(self, description: str) -> Callable[[int, int], None]:
        """The bar appears on the first update, so a run that fails before any work draws none."""
        task_ids: list[TaskID] = []

        def update(done: int, total: int) -> None:
            if not task_ids:
                task_ids.append(self.progress.add_task(description, total=total))
            self.progress.update(task_ids[0], completed=done, total=total)

        return update

    def log(self, message: str) -> None:
        say(message, out=self.progress.console)


def make_progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
