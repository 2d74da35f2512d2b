"""The progress bar of ``gre classify``: images done of the total, images/s, errors and time
left, on stderr (rich); drawn only on a terminal (the closing summary line is the CLI's)."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """The task's recent speed as ``X images/s`` (rich's estimate over its last samples)."""

    def render(self, task: Task) -> Text:
        """``X images/s``, or ``? images/s`` before there is an estimate."""
        speed = task.finished_speed or task.speed
        return Text("? images/s" if speed is None else f"{speed:.1f} images/s")


class BulkProgress:
    """A bar over ``total`` images on ``console`` (default: stderr), disabled where that is
    not a terminal. Use as a context manager; :meth:`advance` once per image answered."""

    def __init__(self, total: int, console: Console | None = None) -> None:
        console = console or Console(stderr=True)
        self._progress = Progress(
            TextColumn("classifying"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TextColumn("{task.fields[errors]} errors"),
            TimeRemainingColumn(),
            console=console,
            disable=not console.is_terminal,
        )
        self._task = self._progress.add_task("classify", total=total, errors=0)
        self.errors = 0

    def __enter__(self) -> BulkProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def advance(self, failed: bool) -> None:
        """One more image answered (``failed``: its row carries an error)."""
        self.errors += failed
        self._progress.update(self._task, advance=1, errors=self.errors)
