from __future__ import annotations

import io

from rich.console import Console
from rich.progress import Progress

from autoprune._console import RichReporter, say


def test_messages_are_never_hard_wrapped_on_a_narrow_pipe() -> None:
    out = io.StringIO()
    narrow = Console(file=out, width=40, force_terminal=False)
    message = "finalist trial 12: " + "/very/long/temporary/path/" * 6 + " wall time 12 s [not markup]"
    say(message, out=narrow)
    assert out.getvalue() == message + "\n"


def test_reporter_log_goes_through_the_same_unwrapped_path() -> None:
    out = io.StringIO()
    progress = Progress(console=Console(file=out, width=30, force_terminal=False))
    message = "x" * 25 + " wall time " + "y" * 40
    RichReporter(progress).log(message)
    assert message in out.getvalue().replace("\r", "")
