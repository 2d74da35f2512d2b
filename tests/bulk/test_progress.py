"""gre.bulk.progress: the bar shows images done, images/s and errors on a terminal, and
draws nothing where stderr is not one."""

from __future__ import annotations

import io

from rich.console import Console

from gre.bulk.progress import BulkProgress


def test_a_terminal_gets_count_rate_and_errors() -> None:
    out = io.StringIO()
    with BulkProgress(4, Console(file=out, force_terminal=True, width=120)) as progress:
        for failed in (False, True, False, False):
            progress.advance(failed)
    text = out.getvalue()
    assert "4/4" in text
    assert "images/s" in text
    assert "1 errors" in text
    assert progress.errors == 1


def test_no_terminal_no_bar() -> None:
    out = io.StringIO()
    with BulkProgress(2, Console(file=out, force_terminal=False)) as progress:
        progress.advance(False)
        progress.advance(True)
    assert out.getvalue() == ""
    assert progress.errors == 1
