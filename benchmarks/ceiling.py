"""The load client's own ceiling: its req/s against a trivial endpoint on this machine.

A figure measured against a real server means little once it nears what the client itself
can send: the sweep flags such steps as client-limited. The trivial endpoint
(benchmarks.trivial_server) answers at once, so the figure is the client's (on a small
machine the endpoint shares the cores, which makes it a conservative ceiling).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from benchmarks.heyload import HeyWindows
from benchmarks.httpclient import Target
from benchmarks.loadgen import ClosedLoop, image_requests
from benchmarks.servers import trivial_endpoint
from benchmarks.stats import summarize
from benchmarks.steady import RecorderWindows

#: The clients the harness can drive load with.
CLIENTS = ("python", "hey")
#: Settle before the measured interval (s): connections open, caches warm.
SETTLE_S = 0.3


async def python_ceiling(
    url: str, images: Sequence[bytes], concurrency: int, seconds: float
) -> float:
    """Successful req/s of the built-in closed-loop client against ``url``."""
    target = Target.parse(url)
    load = ClosedLoop(target, image_requests(target, images), concurrency)
    await load.start()
    try:
        await asyncio.sleep(SETTLE_S)
        samples, elapsed, _ = await RecorderWindows(load.recorder).next_window(seconds)
    finally:
        await load.stop()
    return summarize(samples, elapsed, server_timing=False).throughput


async def hey_ceiling(url: str, image: Path, concurrency: int, seconds: float) -> float:
    """Successful req/s of ``hey -c concurrency`` against ``url``."""
    samples, elapsed, _ = await HeyWindows(url, image, concurrency).next_window(seconds)
    return summarize(samples, elapsed, server_timing=False).throughput


async def measure_ceiling(
    client: str, images: Sequence[bytes], image_path: Path, concurrency: int, seconds: float
) -> float:
    """``client``'s req/s (``"python"`` or ``"hey"``) against a trivial endpoint it starts,
    POSTing the corpus (hey: the file ``image_path``) at ``concurrency``."""
    if client not in CLIENTS:
        raise ValueError(f"unknown client {client!r}: one of {', '.join(CLIENTS)}")
    with trivial_endpoint() as base:
        url = f"{base}/api/classify"
        if client == "hey":
            return await hey_ceiling(url, image_path, concurrency, seconds)
        return await python_ceiling(url, images, concurrency, seconds)
