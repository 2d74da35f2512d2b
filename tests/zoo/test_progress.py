"""gre.zoo.progress: the bar draws bytes on a terminal and nothing elsewhere."""

from __future__ import annotations

import io

from rich.console import Console

from gre.zoo.progress import BarProgress, NoProgress, ProgressSink


def run(sink: ProgressSink) -> None:
    sink.start("models/x/x.caffemodel", 2_000_000, 500_000)
    sink.advance(1_500_000)
    sink.finish()


def test_a_bar_on_a_terminal_shows_the_file_and_bytes() -> None:
    out = io.StringIO()
    with BarProgress(Console(file=out, force_terminal=True, width=100)) as bar:
        run(bar)
    text = out.getvalue()
    assert "models/x/x.caffemodel" in text
    assert "2.0/2.0 MB" in text


def test_nothing_is_drawn_off_a_terminal() -> None:
    out = io.StringIO()
    with BarProgress(Console(file=out, force_terminal=False)) as bar:
        run(bar)
    assert out.getvalue() == ""
    run(NoProgress())
