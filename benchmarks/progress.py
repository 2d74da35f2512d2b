"""The progress display while a sweep runs (rich, on stderr): a bar over the steps, the
current window's figures, and one line per finished step."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks.results import StepResult
from benchmarks.steady import Window


def load_label(mode: str, load: float) -> str:
    """``"c=8"`` (closed loop) or ``"250 req/s"`` (open loop)."""
    return f"c={load:g}" if mode == "closed" else f"{load:g} req/s"


def step_line(step: StepResult) -> str:
    """One finished step, e.g. ``c=8  812.4 req/s  p50 9.1  p99 14.2 ms  batch 6.3  ok``."""
    batch = f"batch {step.mean_batch_size:.1f}" if step.mean_batch_size is not None else "batch n/a"
    errors = f"errors {step.error_count}" if step.errors else "no errors"
    notes = [] if step.stable else ["unstable"]
    if step.client_limited:
        notes.append("CLIENT-LIMITED")
    return (
        f"{load_label(step.mode, step.load):>12}  {step.throughput:8.1f} req/s  "
        f"p50 {step.p50_ms:7.2f}  p99 {step.p99_ms:7.2f} ms  {batch}  {errors}"
        + (f"  [{', '.join(notes)}]" if notes else "")
    )


class SweepProgress:
    """Use as a context manager around a sweep of ``steps`` steps titled ``title``."""

    def __init__(self, title: str, steps: int, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._title = title
        self._task = self._progress.add_task(title, total=steps)

    def __enter__(self) -> SweepProgress:
        self.console.print(f"[bold]{self._title}[/bold]")
        self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def window(self, label: str, index: int, limit: int, window: Window, stable: bool) -> None:
        """After each window: its throughput and mean latency."""
        s = window.summary
        state = "stable" if stable else "settling"
        self._progress.update(
            self._task,
            description=f"{label}: window {index}/{limit} {s.throughput:.1f} req/s "
            f"mean {s.mean_ms:.2f} ms ({state})",
        )

    def step(self, step: StepResult) -> None:
        """After each step: its line, and the bar advances."""
        self._progress.console.print(step_line(step))
        self._progress.update(self._task, advance=1, description=self._title)
