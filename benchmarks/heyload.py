"""hey (Debian's ``hey``, a compiled Go load tool) as a closed-loop window source.

Each window is one ``hey -c C -z Ns -m POST -D IMAGE -o csv URL`` run; its per-request CSV
(``response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,
offset``, seconds) gives the latencies and statuses. hey sends one body (``-D``), keeps no
response headers (so no Server-Timing), and leaves connection errors out of its CSV.
"""

from __future__ import annotations

import asyncio
import csv
import io
import resource
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.loadgen import Sample


def hey_path() -> str:
    """The ``hey`` executable.

    Raises:
        RuntimeError: hey is not installed (with the apt-get line that installs it).
    """
    path = shutil.which("hey")
    if path is None:
        raise RuntimeError("hey is not installed: apt-get install hey (make setup does)")
    return path


def parse_hey_csv(text: str, base: float = 0.0) -> list[Sample]:
    """hey's ``-o csv`` output -> samples, completion times ``base + offset + response-time``.

    Raises:
        ValueError: the text is not hey's CSV.
    """
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or not {"response-time", "status-code", "offset"} <= set(
        reader.fieldnames
    ):
        raise ValueError(f"not hey's CSV output: {text[:200]!r}")
    samples: list[Sample] = []
    for row in reader:
        latency = float(row["response-time"])
        samples.append(
            (base + float(row["offset"]) + latency, latency, int(row["status-code"]), b"")
        )
    samples.sort(key=lambda sample: sample[0])
    return samples


def children_cpu_s() -> float:
    """User + system CPU seconds of this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class HeyWindows:
    """Closed-loop windows, each one hey run of ``concurrency`` workers POSTing ``image``."""

    def __init__(self, url: str, image: Path, concurrency: int) -> None:
        self.command = [
            hey_path(), "-c", str(concurrency), "-m", "POST", "-T", "image/jpeg",
            "-D", str(image), "-t", "60", "-o", "csv",
        ]  # fmt: skip
        self.url = url

    async def next_window(self, seconds: float) -> tuple[Sequence[Sample], float, float]:
        # hey's -z takes Go durations; milliseconds keep sub-second windows exact.
        command = [*self.command, "-z", f"{max(1, round(seconds * 1e3))}ms", self.url]
        start, cpu = time.perf_counter(), children_cpu_s()
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await process.communicate()
        elapsed = time.perf_counter() - start
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {err.decode(errors='replace')}")
        return parse_hey_csv(out.decode(), start), elapsed, children_cpu_s() - cpu
