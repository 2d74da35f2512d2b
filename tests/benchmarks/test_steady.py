"""benchmarks.steady: windows agree within the tolerance; measure() stops at a steady state or
gives up after max_windows, and reports the accepted windows together."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from benchmarks.loadgen import Sample
from benchmarks.stats import summarize
from benchmarks.steady import Settings, Window, agree, is_stable, measure


def samples(
    rate: float, latency_ms: float, seconds: float = 1.0, status: int = 200
) -> list[Sample]:
    """``rate * seconds`` answers of ``latency_ms`` each."""
    count = round(rate * seconds)
    return [(i / rate, latency_ms / 1e3, status, b"") for i in range(count)]


def window(rate: float, latency_ms: float) -> Window:
    data = samples(rate, latency_ms)
    return Window(data, 1.0, 0.01, None, summarize(data, 1.0, False))


class ScriptedWindows:
    """Windows with the given (req/s, ms) in turn: the logic under test is what measure()
    does with the figures, whatever produced them."""

    def __init__(self, script: Sequence[tuple[float, float]]) -> None:
        self.script = list(script)
        self.calls = 0

    async def next_window(self, seconds: float) -> tuple[Sequence[Sample], float, float]:
        rate, latency = self.script[self.calls]
        self.calls += 1
        return samples(rate, latency, seconds), seconds, 0.05


class CountingBatches:
    """Batch counts as gre's /api/model would give them: 10 more batches of 4 per read."""

    def __init__(self) -> None:
        self.reads = 0

    async def __call__(self) -> dict[int, int] | None:
        self.reads += 1
        return {4: 10 * self.reads, 1: 3}


def test_agree_within_tolerance_of_the_mean() -> None:
    assert agree([100, 105, 95], 0.10)
    assert not agree([100, 125, 95], 0.10)  # 125 is 15 % above the mean 106.7
    assert agree([0, 0, 0], 0.10)
    assert not agree([0, 1, 0], 0.10)
    assert not agree([100, math.nan, 100], 0.10)


def test_is_stable_needs_throughput_and_latency_to_agree() -> None:
    settings = Settings(stable_windows=3)
    assert not is_stable([window(100, 10), window(100, 10)], settings)  # too few
    assert is_stable(
        [window(10, 90), window(100, 10), window(102, 10.5), window(98, 9.8)], settings
    )
    assert not is_stable([window(100, 10), window(100, 14), window(100, 10)], settings)
    assert not is_stable([window(100, 10), window(130, 10), window(100, 10)], settings)


async def test_measure_stops_at_the_first_steady_state() -> None:
    script = [(50, 40), (90, 12), (100, 10), (101, 10.2), (99, 9.9), (100, 10)]
    source = ScriptedWindows(script)
    batches = CountingBatches()
    seen: list[int] = []
    result = await measure(
        source, Settings(window_s=1.0, max_windows=10), batches, lambda i, w, s: seen.append(i)
    )
    assert result.stable
    assert source.calls == 5  # windows 3, 4, 5 agree; the 6th is never measured
    assert seen == [1, 2, 3, 4, 5]
    assert result.accepted == 3
    assert result.summary.requests == 100 + 101 + 99
    assert result.summary.seconds == pytest.approx(3.0)
    assert result.summary.p50_ms == pytest.approx(10.0)
    # Batch counts from the end of window 2 to the end of window 5: 30 batches of 4.
    assert result.batches_before == {4: 30, 1: 3}
    assert result.batches_after == {4: 60, 1: 3}
    assert result.client_cpu_s == pytest.approx(0.15)


async def test_measure_gives_up_after_max_windows_and_says_so() -> None:
    script = [(100, 10), (150, 10), (100, 10), (150, 10), (100, 10)]
    result = await measure(
        ScriptedWindows(script), Settings(window_s=1.0, max_windows=5), CountingBatches()
    )
    assert not result.stable
    assert len(result.windows) == 5
    assert result.summary.requests == 100 + 150 + 100  # the last three windows


def test_settings_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="stable_windows"):
        Settings(stable_windows=4, max_windows=3)
    with pytest.raises(ValueError, match="window_s"):
        Settings(window_s=0)
