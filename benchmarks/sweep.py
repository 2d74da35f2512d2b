"""A sweep: one load step after another against one URL, each measured to a steady state.

Closed loop: the steps are concurrencies (1, 2, 4, ... 64). Open loop: offered request
rates with Poisson or constant arrivals. Per step: throughput, latency percentiles, errors by
status, the server's own timings (Server-Timing) and, where the server tells them (gre's
``GET /api/model`` ``batches_by_size``), the mean batch size.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from benchmarks.corpus import Corpus
from benchmarks.heyload import HeyWindows
from benchmarks.httpclient import Target, fetch
from benchmarks.loadgen import ClosedLoop, Load, OpenLoop, image_requests
from benchmarks.progress import SweepProgress, load_label
from benchmarks.results import StepResult
from benchmarks.stats import mean_batch_size
from benchmarks.steady import RecorderWindows, Settings, WindowSource, measure

MODES = ("closed", "open")
#: A step whose throughput exceeds this fraction of the client's ceiling is client-limited.
CLIENT_LIMIT_FRACTION = 0.5


@dataclass(frozen=True)
class SweepSpec:
    """What to drive and how. ``loads``: concurrencies (closed) or req/s (open)."""

    url: str
    mode: str
    loads: Sequence[float]
    client: str = "python"
    poisson: bool = True
    max_connections: int = 1024
    settings: Settings = field(default_factory=Settings)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.client == "hey" and self.mode == "open":
            raise ValueError("hey has no open loop (its -q caps each worker); use --client python")
        if not self.loads or any(load <= 0 for load in self.loads):
            raise ValueError("loads must be positive numbers")
        if self.mode == "closed" and any(load != int(load) for load in self.loads):
            raise ValueError("concurrencies must be whole numbers")


class BatchProbe:
    """Reads ``GET /api/model`` ``batches_by_size`` (gre); once a server answers without it,
    stops asking and answers ``None``."""

    def __init__(self, target: Target) -> None:
        self.target = target.with_path("/api/model")
        self.available = True

    async def __call__(self) -> dict[int, int] | None:
        if not self.available:
            return None
        try:
            response = await fetch(self.target)
            data = json.loads(response.body) if response.status == 200 else None
        except (OSError, ValueError):
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("batches_by_size"), dict):
            self.available = False
            return None
        return {int(size): int(count) for size, count in data["batches_by_size"].items()}


def client_limited(step: StepResult, ceiling: float | None) -> bool:
    """Throughput above :data:`CLIENT_LIMIT_FRACTION` of the ceiling, or (open loop) a client
    scheduler whose p99 lag exceeds max(1 ms, 10 % of the step's p99 latency)."""
    if ceiling is not None and step.throughput > CLIENT_LIMIT_FRACTION * ceiling:
        return True
    if step.client_lag_p99_ms is not None and not math.isnan(step.p99_ms):
        return step.client_lag_p99_ms > max(1.0, 0.1 * step.p99_ms)
    return False


async def run_step(
    spec: SweepSpec,
    corpus: Corpus,
    load: float,
    ceiling: float | None,
    progress: SweepProgress | None = None,
) -> StepResult:
    """Run one step to a steady state (or ``max_windows``) and summarise it."""
    target = Target.parse(spec.url)
    label = load_label(spec.mode, load)
    settings = spec.settings
    generator: Load | None = None
    source: WindowSource
    if spec.client == "hey":
        source = HeyWindows(spec.url, corpus.paths[0], int(load))
        if settings.warmup_s:
            await source.next_window(settings.warmup_s)
    else:
        requests = image_requests(target, corpus.images)
        if spec.mode == "closed":
            generator = ClosedLoop(target, requests, int(load))
        else:
            generator = OpenLoop(target, requests, load, spec.poisson, spec.max_connections)
        await generator.start()
        await asyncio.sleep(settings.warmup_s)
        source = RecorderWindows(generator.recorder)
    lag_start = len(generator.recorder.lags) if generator else 0
    try:
        measurement = await measure(
            source,
            settings,
            BatchProbe(target),
            lambda i, w, s: (
                progress.window(label, i, settings.max_windows, w, s) if progress else None
            ),
        )
    finally:
        unanswered = await generator.stop() if generator else 0
    summary = measurement.summary
    lags = generator.recorder.lags[lag_start:] if generator and spec.mode == "open" else []
    step = StepResult(
        mode=spec.mode,
        load=load,
        stable=measurement.stable,
        windows=len(measurement.windows),
        accepted_windows=measurement.accepted,
        seconds=summary.seconds,
        requests=summary.requests,
        ok=summary.ok,
        throughput=summary.throughput,
        answered_rate=summary.answered_rate,
        mean_ms=summary.mean_ms,
        p50_ms=summary.p50_ms,
        p90_ms=summary.p90_ms,
        p95_ms=summary.p95_ms,
        p99_ms=summary.p99_ms,
        max_ms=summary.max_ms,
        errors=summary.errors,
        server_ms=summary.server_ms,
        mean_batch_size=mean_batch_size(measurement.batches_before, measurement.batches_after),
        unanswered=unanswered,
        client_cpu_cores=measurement.client_cpu_s / summary.seconds,
        client_lag_p99_ms=float(np.percentile(lags, 99) * 1e3) if lags else None,
        window_throughputs=[w.summary.throughput for w in measurement.windows],
        window_mean_ms=[w.summary.mean_ms for w in measurement.windows],
    )
    step.client_limited = client_limited(step, ceiling)
    return step


async def run_sweep(
    spec: SweepSpec, corpus: Corpus, ceiling: float | None, title: str = ""
) -> list[StepResult]:
    """Every step of ``spec`` in order, with a progress display on stderr."""
    steps = []
    with SweepProgress(title or f"{spec.mode} loop against {spec.url}", len(spec.loads)) as bar:
        for load in spec.loads:
            step = await run_step(spec, corpus, load, ceiling, bar)
            bar.step(step)
            steps.append(step)
    return steps
