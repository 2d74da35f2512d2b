"""Summaries of answered requests: throughput, latency percentiles, errors, server timings."""

from __future__ import annotations

import contextlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from benchmarks.loadgen import Sample

#: The latency percentiles every summary reports.
PERCENTILES = (50, 90, 95, 99)


def is_ok(status: int) -> bool:
    """2xx: an answered classification."""
    return 200 <= status < 300


def status_label(status: int) -> str:
    """``"503"``, or ``"conn"`` for a connection error (status 0)."""
    return str(status) if status else "conn"


def parse_server_timing(header: bytes) -> dict[str, float]:
    """``b"queue;dur=1.5, inference;dur=3"`` -> ``{"queue": 1.5, "inference": 3.0}`` (ms).

    The W3C Server-Timing syntax: comma-separated metrics, each a name with ``;``-separated
    parameters; metrics without a parsable ``dur`` are skipped.
    """
    timings: dict[str, float] = {}
    for metric in header.decode("latin-1").split(","):
        name, *params = (part.strip() for part in metric.split(";"))
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "dur" and name:
                with contextlib.suppress(ValueError):
                    timings[name] = float(value.strip().strip('"'))
    return timings


@dataclass(frozen=True)
class Summary:
    """What a set of samples over ``seconds`` of wall time shows.

    ``throughput`` counts successful (2xx) answers per second; ``answered_rate`` counts every
    answer, errors included. Latencies (ms) are over successful answers only: a fast 503 must
    not make a server look quick. ``errors`` maps a status (``"conn"`` for connection errors)
    to its count; ``server_ms`` is the mean of each ``Server-Timing`` duration (ms) over
    successful answers that carried it.
    """

    seconds: float
    requests: int
    ok: int
    throughput: float
    answered_rate: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int] = field(default_factory=dict)
    server_ms: dict[str, float] = field(default_factory=dict)


def summarize(samples: Sequence[Sample], seconds: float, server_timing: bool = True) -> Summary:
    """Summarise ``samples`` answered over ``seconds`` (> 0) of wall time.

    Percentiles are numpy's linear interpolation between order statistics; with no successful
    answer every latency is NaN. ``server_timing=False`` skips parsing the headers (cheap
    summaries for the stability check).
    """
    ok_latencies = np.array([s[1] for s in samples if is_ok(s[2])], dtype=np.float64) * 1e3
    errors = Counter(status_label(s[2]) for s in samples if not is_ok(s[2]))
    if ok_latencies.size:
        p50, p90, p95, p99 = np.percentile(ok_latencies, PERCENTILES)
        mean, worst = float(ok_latencies.mean()), float(ok_latencies.max())
    else:
        p50 = p90 = p95 = p99 = np.float64(np.nan)
        mean = worst = float("nan")
    server_ms: dict[str, float] = {}
    if server_timing:
        sums: dict[str, float] = defaultdict(float)
        counts: Counter[str] = Counter()
        for sample in samples:
            if sample[3] and is_ok(sample[2]):
                for name, ms in parse_server_timing(sample[3]).items():
                    sums[name] += ms
                    counts[name] += 1
        server_ms = {name: sums[name] / counts[name] for name in sums}
    return Summary(
        seconds=seconds,
        requests=len(samples),
        ok=int(ok_latencies.size),
        throughput=ok_latencies.size / seconds,
        answered_rate=len(samples) / seconds,
        mean_ms=mean,
        p50_ms=float(p50),
        p90_ms=float(p90),
        p95_ms=float(p95),
        p99_ms=float(p99),
        max_ms=worst,
        errors=dict(sorted(errors.items())),
        server_ms=server_ms,
    )


def mean_batch_size(before: dict[int, int] | None, after: dict[int, int] | None) -> float | None:
    """Mean images per batch from two snapshots of batch counts by size (``None``: the
    server does not report them, or no batch ran in between)."""
    if before is None or after is None:
        return None
    delta = {size: after.get(size, 0) - before.get(size, 0) for size in after}
    batches = sum(delta.values())
    if batches <= 0:
        return None
    return sum(size * count for size, count in delta.items()) / batches
