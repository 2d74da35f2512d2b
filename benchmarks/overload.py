"""Overload: offer gre several times its measured capacity and check that it sheds the excess.

    python -m benchmarks.overload [--factor 5] [--seconds 10] [--config FILE] [--set KEY=VALUE ...]

Against one ``gre serve`` started here (access log off), on a photo corpus:
  1. capacity: a closed loop (--connections, default 2 x max_batch_size, each sending its next
     request once answered) for --capacity-seconds: capacity = answers 200 per second.
  2. baseline: one connection, back to back, for 2 s: latency on an idle service.
  3. burst: an open loop offering --factor x capacity for --seconds, constant gaps, whatever
     the answers (each request on an idle kept-alive connection, else a new one), with
     ``gre_queue_depth`` read from /metrics every 100 ms.
  4. after: every burst request answered; the queue depth; the baseline again.

Prints status counts by error code; the latency of 503s (target: p99 < 50 ms, each with
Retry-After), of accepted requests against their deadline (``timeout_ms``: a 504 is an
accepted request that missed it); the queue depth during and after (target: never above
``max_queue_size``, 0 after); baseline latency before and after; RSS of the front end and
replicas before and after. Latency runs from the request's write to its answer; the client's
lag behind its schedule and its CPU use are printed apart: if the lag is large, the client,
not gre, is the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import uvloop

from benchmarks.data import distinct_jpegs
from benchmarks.httpclient import Connection, Target, build_request, fetch
from benchmarks.rss import rss_table, service_rss
from benchmarks.servers import gre_for_script
from benchmarks.verdicts import print_verdicts

#: 503s must be answered within this (ms, p99).
REJECT_TARGET_MS = 50.0
#: The client is likely the bottleneck when its p99 lag behind the schedule exceeds this (ms).
LAG_WARNING_MS = 10.0

clock = time.perf_counter


class RetryAfterConnection(Connection):
    """A :class:`Connection` that also keeps the last response's ``Retry-After``."""

    retry_after = b""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.retry_after = b""

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        if name.lower() == b"retry-after":
            self.retry_after = value


@dataclass(frozen=True)
class Answer:
    """One burst request: ``lag`` (s) from its scheduled time to when the client got to it,
    ``latency`` (s) from its write (on a connection already open) to the answer, HTTP
    ``status`` (0: connection failed) and error ``code``."""

    lag: float
    latency: float
    status: int
    code: str
    retry_after: bytes


def error_code(status: int, body: bytes) -> str:
    """The ``error`` of gre's JSON error body; ``""`` for a 200."""
    if status == 200:
        return ""
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return "(not gre's JSON)"


def ms(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1e3, q)) if values else float("nan")


def latency_line(values: Sequence[float]) -> str:
    return f"p50 {ms(values, 50):.1f} ms, p99 {ms(values, 99):.1f} ms, max {ms(values, 100):.1f} ms"


async def closed_loop(
    target: Target, requests: Sequence[bytes], connections: int, seconds: float
) -> tuple[float, list[float]]:
    """``connections`` workers back to back for ``seconds``: (200s per second, their
    latencies in s)."""
    latencies: list[float] = []
    start = clock()
    end = start + seconds

    async def worker(offset: int) -> None:
        connection = await Connection.open(target)
        i = offset
        try:
            while clock() < end:
                sent = clock()
                response = await connection.send(requests[i % len(requests)])
                i += 1
                if response.status == 200:
                    latencies.append(clock() - sent)
        finally:
            connection.close()

    await asyncio.gather(*(worker(k) for k in range(connections)))
    return len(latencies) / (clock() - start), latencies


async def open_loop(
    target: Target, requests: Sequence[bytes], rate: float, seconds: float
) -> tuple[list[Answer], int, float]:
    """Send ``rate`` requests per second for ``seconds`` whatever the answers, then wait for
    every answer. Returns the answers, the connections opened, and when the last was sent."""
    idle: list[RetryAfterConnection] = []
    answers: list[Answer] = []
    opened = 0

    async def one(request: bytes, due: float) -> None:
        nonlocal opened
        lag = clock() - due
        connection = None
        while idle and connection is None:
            candidate = idle.pop()
            connection = None if candidate.closed else candidate
        if connection is None:
            try:
                connection = await RetryAfterConnection.open(target, keep_body=True)
            except OSError:
                answers.append(Answer(lag, 0.0, 0, "connect failed", b""))
                return
            opened += 1
        sent = clock()
        try:
            response = await connection.send(request)
        except ConnectionError:
            connection.close()
            answers.append(Answer(lag, clock() - sent, 0, "connection lost", b""))
            return
        latency = clock() - sent
        code = error_code(response.status, response.body)
        answers.append(Answer(lag, latency, response.status, code, connection.retry_after))
        if not connection.closed:
            idle.append(connection)

    tasks: set[asyncio.Task[None]] = set()
    start = clock()
    for i in range(round(rate * seconds)):
        due = start + i / rate
        delay = due - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(requests[i % len(requests)], due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    last_sent = clock()
    await asyncio.gather(*tasks)
    for connection in idle:
        connection.close()
    return answers, opened, last_sent


async def queue_depth(target: Target) -> float:
    """``gre_queue_depth`` from /metrics."""
    text = (await fetch(target.with_path("/metrics"))).body.decode()
    found = re.search(r"^gre_queue_depth (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else float("nan")


async def sample_queue(target: Target, into: list[tuple[float, float]], every_s: float) -> None:
    """Append (time, queue depth) every ``every_s`` until cancelled."""
    while True:
        into.append((clock(), await queue_depth(target)))
        await asyncio.sleep(every_s)


async def measure(target: Target, front_end_pid: int, args: argparse.Namespace) -> bool:
    """The four steps; prints the figures, returns whether every target was met."""
    model = json.loads((await fetch(target.with_path("/api/model"))).body)
    batching = model["batching"]
    timeout_ms = float(batching["timeout_ms"])
    print(
        f"model {model['name']}, engine {model['engine']}, {len(model['replicas'])} replica(s) "
        f"on {', '.join(model['devices'])}; max_batch_size {batching['max_batch_size']}, "
        f"max_queue_size {batching['max_queue_size']}, timeout_ms {timeout_ms:g}",
        flush=True,
    )
    requests = [build_request(target, "POST", image) for image in distinct_jpegs(args.images)]
    rss_before = await service_rss(target, front_end_pid)

    connections = args.connections or 2 * int(batching["max_batch_size"])
    await closed_loop(target, requests, connections, 1.0)  # warm-up
    capacity, _ = await closed_loop(target, requests, connections, args.capacity_seconds)
    print(
        f"(1) capacity: {capacity:.1f} req/s (closed loop, {connections} connections, "
        f"{args.capacity_seconds:g} s)",
        flush=True,
    )
    drain_s = int(batching["max_queue_size"]) / capacity
    print(
        f"    a full queue drains in {drain_s:.1f} s at this capacity (deadline "
        f"{timeout_ms / 1e3:g} s); max_queue_size draining in half the deadline: "
        f"{int(capacity * timeout_ms / 2e3)}",
        flush=True,
    )
    _, baseline = await closed_loop(target, requests, 1, 2.0)
    print(f"(2) baseline, 1 connection: {latency_line(baseline)}", flush=True)

    rate = args.factor * capacity
    depths: list[tuple[float, float]] = []
    sampler = asyncio.create_task(sample_queue(target, depths, 0.1))
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    burst_start = clock()
    answers, opened, last_sent = await open_loop(target, requests, rate, args.seconds)
    all_answered = clock()
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.sleep(0.3)  # a few samples after the last answer
    sampler.cancel()
    cpu_s = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)

    counts = Counter((a.status, a.code) for a in answers)
    print(
        f"(3) burst: {rate:.1f} req/s offered ({args.factor:g} x capacity) for "
        f"{args.seconds:g} s: {len(answers)} requests on {opened} connections"
    )
    for (status, code), n in sorted(counts.items()):
        print(f"    {status} {code or 'ok':<20} {n:>7}  ({100 * n / len(answers):.1f}%)")
    refused = [a for a in answers if a.status == 503]
    accepted = [a for a in answers if a.status == 200]
    missed = [a for a in answers if a.status == 504]
    without_retry = sum(1 for a in refused if not a.retry_after)
    print(
        f"    503 latency: {latency_line([a.latency for a in refused])} "
        f"(target p99 < {REJECT_TARGET_MS:g} ms); without Retry-After: {without_retry}"
    )
    print(
        f"    200 latency: {latency_line([a.latency for a in accepted])}; deadline "
        f"{timeout_ms:g} ms; 504 (accepted, deadline missed): {len(missed)}"
    )
    during = [d for t, d in depths if burst_start <= t <= last_sent]
    empty_at = next((t for t, d in depths if t >= last_sent and d == 0), None)
    print(
        f"    queue depth during the burst: max {max(during, default=0):.0f}, mean "
        f"{np.mean(during) if during else 0:.0f} (max_queue_size {batching['max_queue_size']})"
    )
    lags = [a.lag for a in answers]
    busy = cpu_s / (all_answered - burst_start)
    print(f"    client: lag behind schedule {latency_line(lags)}; CPU {100 * busy:.0f}% of a core")
    if ms(lags, 99) > LAG_WARNING_MS:
        print("    WARNING: the client fell behind its schedule: it, or a busy machine, may be")
        print("    the bottleneck (its CPU share above tells which)")

    depth_after = await queue_depth(target)
    drained = f"{(empty_at - last_sent) * 1e3:.0f} ms" if empty_at is not None else "never seen"
    print(
        f"(4) after: last request sent -> queue empty {drained}, -> every answer "
        f"{(all_answered - last_sent) * 1e3:.0f} ms; queue depth now {depth_after:.0f}"
    )
    _, again = await closed_loop(target, requests, 1, 2.0)
    print(f"    baseline again, 1 connection: {latency_line(again)}")
    rss_after = await service_rss(target, front_end_pid)
    print("RSS (MiB):\n" + rss_table([("before", rss_before), ("after", rss_after)]))

    max_queue = int(batching["max_queue_size"])
    verdicts = {
        "the queue filled: some requests got 503 (else: a longer --seconds)": bool(refused),
        f"503 p99 < {REJECT_TARGET_MS:g} ms": ms([a.latency for a in refused], 99)
        < REJECT_TARGET_MS,
        "every 503 has Retry-After": without_retry == 0,
        "accepted requests answered within the deadline (no 504)": not missed,
        "queue depth never above max_queue_size": max(during, default=0) <= max_queue,
        "queue empty after the burst": depth_after == 0,
        "no other status": set(counts)
        <= {(200, ""), (503, "queue_full"), (504, "deadline_exceeded")},
        "baseline p50 back within 1.5x": ms(again, 50) <= 1.5 * ms(baseline, 50),
    }
    return print_verdicts(verdicts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path)
    parser.add_argument("--factor", type=float, default=5.0, help="offered load / capacity")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the burst")
    parser.add_argument("--capacity-seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=0, help="closed loop (capacity)")
    parser.add_argument("--images", type=int, default=10, help="distinct photos sent")
    parser.add_argument("--set", dest="settings", action="append", default=[])
    args = parser.parse_args()
    with gre_for_script(args.config, args.settings) as (target, front_end_pid):
        ok = uvloop.run(measure(target, front_end_pid, args))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
