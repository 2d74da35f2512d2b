"""Load generators: closed loop (fixed concurrency) and open loop (fixed request rate).

Both run until stopped and append one :data:`Sample` per answered request to a
:class:`Recorder`, in completion order, so that a measurement window is a slice of it.

* Closed loop: ``concurrency`` workers, each with its own keep-alive connection, each sending
  its next request as soon as the previous one is answered (hey's and wrk's model). Latency
  runs from the write to the end of the response.
* Open loop: requests arrive on a schedule (Poisson: exponential gaps; constant: ``1/rate``)
  whatever the server does, each on an idle connection or a new one, up to
  ``max_connections`` (then they wait for one). Latency runs from the *scheduled* arrival, so
  waiting behind a slow server counts (wrk2's correction for coordinated omission). The
  scheduler's own lag behind the schedule is kept apart, as a sign of a client that cannot
  keep up.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from benchmarks.httpclient import Connection, Target, build_request

#: One answered request: (completion time [s, time.perf_counter], latency [s], HTTP status or
#: 0 for a connection error, the raw ``Server-Timing`` header or ``b""``).
Sample = tuple[float, float, int, bytes]

#: After a failed connect, wait this long (s) before trying again (no hot loop on a dead server).
RECONNECT_PAUSE_S = 0.01


@dataclass
class Recorder:
    """Samples in completion order, and the open loop's scheduler lag (s) per request."""

    samples: list[Sample] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)


class Load(Protocol):
    """A running load: ``start`` it, read its ``recorder``, ``stop`` it."""

    recorder: Recorder

    async def start(self) -> None: ...

    async def stop(self) -> int:
        """Stop sending; cancel what is in flight; returns how many requests were unanswered."""
        ...


def image_requests(target: Target, images: Sequence[bytes]) -> list[bytes]:
    """One complete ``POST`` per image (``Content-Type: image/jpeg``), built once."""
    return [build_request(target, "POST", image, "image/jpeg") for image in images]


class ClosedLoop:
    """``concurrency`` workers sending ``requests`` round-robin, back to back."""

    def __init__(self, target: Target, requests: Sequence[bytes], concurrency: int) -> None:
        if concurrency < 1 or not requests:
            raise ValueError("a closed loop needs concurrency >= 1 and at least one request")
        self.target = target
        self.requests = requests
        self.concurrency = concurrency
        self.recorder = Recorder()
        self._tasks: list[asyncio.Task[None]] = []
        self._connections: set[Connection] = set()
        self._in_flight = 0

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker(k)) for k in range(self.concurrency)]

    async def stop(self) -> int:
        unanswered = self._in_flight
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for connection in self._connections:
            connection.close()
        return unanswered

    async def _worker(self, offset: int) -> None:
        record = self.recorder.samples.append
        clock = time.perf_counter
        requests, n = self.requests, len(self.requests)
        i = offset
        connection: Connection | None = None
        while True:
            if connection is None or connection.closed:
                if connection is not None:
                    self._connections.discard(connection)
                try:
                    connection = await Connection.open(self.target)
                except OSError:
                    now = clock()
                    record((now, 0.0, 0, b""))
                    await asyncio.sleep(RECONNECT_PAUSE_S)
                    continue
                self._connections.add(connection)
            request = requests[i % n]
            i += 1
            self._in_flight += 1
            start = clock()
            try:
                response = await connection.send(request)
            except ConnectionError:
                now = clock()
                record((now, now - start, 0, b""))
                connection.close()
                continue
            finally:
                self._in_flight -= 1
            now = clock()
            record((now, now - start, response.status, response.server_timing))


class OpenLoop:
    """Requests at ``rate`` per second (Poisson or constant gaps), whatever the answers."""

    def __init__(
        self,
        target: Target,
        requests: Sequence[bytes],
        rate: float,
        poisson: bool = True,
        max_connections: int = 1024,
        seed: int = 0,
    ) -> None:
        if rate <= 0 or not requests:
            raise ValueError("an open loop needs a rate > 0 and at least one request")
        self.target = target
        self.requests = requests
        self.rate = rate
        self.poisson = poisson
        self.max_connections = max_connections
        self.recorder = Recorder()
        self._random = random.Random(seed)
        self._scheduler: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._idle: list[Connection] = []
        self._all: set[Connection] = set()
        self._waiters: deque[asyncio.Future[Connection]] = deque()
        self._opening = 0

    async def start(self) -> None:
        self._scheduler = asyncio.create_task(self._schedule())

    async def stop(self) -> int:
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
        unanswered = len(self._in_flight)
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        for connection in self._all:
            connection.close()
        return unanswered

    def _gap(self) -> float:
        if self.poisson:
            return self._random.expovariate(self.rate)
        return 1.0 / self.rate

    async def _schedule(self) -> None:
        clock = time.perf_counter
        lag = self.recorder.lags.append
        requests, n = self.requests, len(self.requests)
        i = 0
        due = clock()
        while True:
            now = clock()
            # Fire every arrival that is due: sleeps overshoot by up to a timer tick, and a
            # late scheduler must catch up rather than lower the rate.
            while due <= now:
                lag(now - due)
                task = asyncio.create_task(self._one(requests[i % n], due))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
                i += 1
                due += self._gap()
            await asyncio.sleep(due - now)

    async def _one(self, request: bytes, scheduled: float) -> None:
        record = self.recorder.samples.append
        clock = time.perf_counter
        try:
            connection = await self._acquire()
        except OSError:
            now = clock()
            record((now, now - scheduled, 0, b""))
            return
        try:
            response = await connection.send(request)
        except ConnectionError:
            now = clock()
            record((now, now - scheduled, 0, b""))
            self._discard(connection)
            return
        now = clock()
        record((now, now - scheduled, response.status, response.server_timing))
        if connection.closed:
            self._discard(connection)
        else:
            self._release(connection)

    async def _acquire(self) -> Connection:
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                return connection
            self._all.discard(connection)
        if len(self._all) + self._opening < self.max_connections:
            self._opening += 1
            try:
                connection = await Connection.open(self.target)
            finally:
                self._opening -= 1
            self._all.add(connection)
            return connection
        waiter: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return await waiter

    def _release(self, connection: Connection) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        self._idle.append(connection)

    def _discard(self, connection: Connection) -> None:
        """A broken connection frees its slot: a waiter gets a fresh one."""
        connection.close()
        self._all.discard(connection)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                task = asyncio.ensure_future(self._reopen(waiter))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
                return

    async def _reopen(self, waiter: asyncio.Future[Connection]) -> None:
        try:
            connection = await Connection.open(self.target)
        except OSError as exc:
            if not waiter.done():
                waiter.set_exception(exc)
            return
        self._all.add(connection)
        if waiter.done():
            self._release(connection)
        else:
            waiter.set_result(connection)
