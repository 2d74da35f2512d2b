"""The progress display of ``gre fetch``: one bar per file, in bytes, on stderr (rich), or
nothing (:class:`NoProgress`, for tests and non-terminals)."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


class ProgressSink(Protocol):
    """What a transfer reports: :meth:`start` once per file, :meth:`advance` per chunk,
    :meth:`finish` at the end (also when it fails)."""

    def start(self, label: str, total: int | None, completed: int) -> None:
        """A transfer of ``total`` bytes (``None``: unknown) begins, ``completed`` already
        there (a resumed ``.part``)."""

    def advance(self, nbytes: int) -> None:
        """``nbytes`` more bytes arrived."""

    def finish(self) -> None:
        """The current transfer ended."""


class NoProgress:
    """Reports nothing."""

    def start(self, label: str, total: int | None, completed: int) -> None:
        """Nothing to show."""

    def advance(self, nbytes: int) -> None:
        """Nothing to show."""

    def finish(self) -> None:
        """Nothing to show."""


class BarProgress:
    """A rich progress bar per file on ``console`` (default: stderr): bytes done of total,
    speed and time left. Use as a context manager; it draws only on a terminal."""

    def __init__(self, console: Console | None = None) -> None:
        console = console or Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not console.is_terminal,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> BarProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def start(self, label: str, total: int | None, completed: int) -> None:
        """Add a bar for ``label``."""
        self._task = self._progress.add_task(label, total=total, completed=completed)

    def advance(self, nbytes: int) -> None:
        """Move the current bar on by ``nbytes``."""
        if self._task is not None:
            self._progress.advance(self._task, nbytes)

    def finish(self) -> None:
        """Leave the current bar where it stopped."""
        self._task = None
