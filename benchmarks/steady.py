"""Steady-state measurement in windows, as Triton's perf_analyzer does it.

The load runs continuously; it is measured in consecutive windows of ``window_s`` seconds.
A measurement is accepted once the last ``stable_windows`` (3) windows agree: each one's
throughput and mean latency lie within ``tolerance`` (10 %) of those windows' mean
(perf_analyzer's ``--stability-percentage``). After ``max_windows`` (perf_analyzer's
``--max-trials``) it gives up and keeps the last windows, marked unstable. The step's figures
are computed over the accepted windows together.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from benchmarks.loadgen import Recorder, Sample
from benchmarks.stats import Summary, summarize


@dataclass(frozen=True)
class Settings:
    """How a step is measured (seconds; ``tolerance`` is a fraction)."""

    window_s: float = 2.0
    tolerance: float = 0.10
    stable_windows: int = 3
    max_windows: int = 10
    warmup_s: float = 1.0

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.tolerance <= 0 or self.warmup_s < 0:
            raise ValueError("window_s and tolerance must be > 0, warmup_s >= 0")
        if not 1 <= self.stable_windows <= self.max_windows:
            raise ValueError("need 1 <= stable_windows <= max_windows")


@dataclass(frozen=True)
class Window:
    """One window's samples, wall time (s), the client's CPU time in it (s), and the
    server's batch counts by size at its end (``None`` where the server tells none)."""

    samples: Sequence[Sample]
    seconds: float
    client_cpu_s: float
    batches: dict[int, int] | None
    summary: Summary


def agree(values: Sequence[float], tolerance: float) -> bool:
    """Every value within ``tolerance`` (fraction) of their mean; all zero agrees, any NaN
    does not (a window without one successful answer is no steady state)."""
    if any(math.isnan(v) for v in values):
        return False
    mean = sum(values) / len(values)
    if mean == 0:
        return all(v == 0 for v in values)
    return all(abs(v - mean) <= tolerance * abs(mean) for v in values)


def is_stable(windows: Sequence[Window], settings: Settings) -> bool:
    """The last ``stable_windows`` windows agree on throughput and on mean latency."""
    if len(windows) < settings.stable_windows:
        return False
    last = [w.summary for w in windows[-settings.stable_windows :]]
    return agree([s.throughput for s in last], settings.tolerance) and agree(
        [s.mean_ms for s in last], settings.tolerance
    )


class WindowSource(Protocol):
    """Gives the next window of a running load."""

    async def next_window(self, seconds: float) -> tuple[Sequence[Sample], float, float]:
        """Measure for about ``seconds``; returns (samples, wall s, client CPU s)."""
        ...


class RecorderWindows:
    """Windows cut from a :class:`~benchmarks.loadgen.Recorder` fed by a load in this process:
    a window is the samples completed between two instants."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self._index = len(recorder.samples)
        self._time = time.perf_counter()
        self._cpu = time.process_time()

    async def next_window(self, seconds: float) -> tuple[Sequence[Sample], float, float]:
        await asyncio.sleep(max(0.0, self._time + seconds - time.perf_counter()))
        end, now, cpu = len(self.recorder.samples), time.perf_counter(), time.process_time()
        window = self.recorder.samples[self._index : end]
        elapsed, cpu_s = now - self._time, cpu - self._cpu
        self._index, self._time, self._cpu = end, now, cpu
        return window, elapsed, cpu_s


@dataclass(frozen=True)
class Measurement:
    """Every window measured, how many were accepted (the last ones), and whether they
    agreed; ``summary`` is over the accepted windows together (Server-Timing parsed)."""

    windows: list[Window]
    accepted: int
    stable: bool
    summary: Summary
    batches_before: dict[int, int] | None
    batches_after: dict[int, int] | None
    client_cpu_s: float

    @property
    def accepted_windows(self) -> list[Window]:
        return self.windows[-self.accepted :]


async def measure(
    source: WindowSource,
    settings: Settings,
    batches: Callable[[], Awaitable[dict[int, int] | None]],
    on_window: Callable[[int, Window, bool], None] = lambda i, w, s: None,
) -> Measurement:
    """Measure windows from ``source`` until stable or ``max_windows``.

    ``batches`` reads the server's batch counts by size (``None`` if it has none); it is read
    at the start and at the end of every window. ``on_window(index, window, stable)`` is
    called after each window (progress display).
    """
    windows: list[Window] = []
    start_batches = await batches()
    stable = False
    while len(windows) < settings.max_windows:
        samples, seconds, cpu_s = await source.next_window(settings.window_s)
        window = Window(
            samples, seconds, cpu_s, await batches(), summarize(samples, seconds, False)
        )
        windows.append(window)
        stable = is_stable(windows, settings)
        on_window(len(windows), window, stable)
        if stable:
            break
    accepted = min(settings.stable_windows, len(windows))
    chosen = windows[-accepted:]
    before = windows[-accepted - 1].batches if len(windows) > accepted else start_batches
    merged = [sample for window in chosen for sample in window.samples]
    return Measurement(
        windows=windows,
        accepted=accepted,
        stable=stable,
        summary=summarize(merged, sum(w.seconds for w in chosen)),
        batches_before=before,
        batches_after=chosen[-1].batches,
        client_cpu_s=sum(w.client_cpu_s for w in chosen),
    )
