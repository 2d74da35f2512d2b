"""The dynamic batcher: one queue, one dispatcher per replica.

Each dispatcher loops: take a batch from the queue when its replica is idle, run it, resolve
the requests' futures. Requests resolve with a :class:`Completed`, or an exception:
:class:`~gre.batchqueue.QueueFull`, :class:`~gre.batchqueue.DeadlineExceeded`,
:class:`ShuttingDown` or :class:`BatchError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from gre.admission import WaitEstimate
from gre.batchqueue import BatchQueue, DeadlineExceeded, Pending, QueueFull
from gre.classifier import BatchResult, Outcome
from gre.config import BatchingConfig

log = logging.getLogger("gre.scheduler")


class ShuttingDown(Exception):
    """The service is draining and accepts no new requests (HTTP 503)."""


class BatchError(Exception):
    """The replica failed the batch this request was in (HTTP 503)."""


class WorkerLost(Exception):
    """A worker died or stopped answering; the scheduler stops dispatching to it."""


class Worker(Protocol):
    """What the scheduler dispatches to: a replica, or a fake one in tests."""

    name: str

    async def run(self, images: Sequence[bytes], top_ks: Sequence[int]) -> BatchResult:
        """Classify a batch; outcomes in request order. Raises on failure of the batch."""
        ...


@dataclass(frozen=True)
class Completed:
    """A request's answer and where its time went (ms)."""

    outcome: Outcome
    queue_ms: float
    preprocess_ms: float
    inference_ms: float
    batch_size: int
    replica: str


class Scheduler:
    """Dynamic batching over any number of workers (see module docstring).

    Args:
        batching: ``max_batch_size``, ``max_queue_delay_ms``, ``max_queue_size``,
            ``timeout_ms``.
    """

    def __init__(self, batching: BatchingConfig) -> None:
        self.batching = batching
        self.queue = BatchQueue(batching.max_queue_size)
        #: How many batches of each size were dispatched so far.
        self.batch_sizes: Counter[int] = Counter()
        self._dispatchers: dict[str, asyncio.Task[None]] = {}
        self._in_flight: set[Pending] = set()
        self._live: set[str] = set()
        self._busy: set[str] = set()
        #: Called with (worker name, batch size, result) after each answered batch.
        self.on_batch: Callable[[str, int, BatchResult], None] | None = None
        #: The replicas' recent speed, for refusing requests that could not finish in time.
        self.wait = WaitEstimate()
        self._closing = False

    def admit(self, timeout_ms: float | None = None) -> float:
        """Whether a request with this deadline would be queued now; returns its timeout (ms),
        ``min(timeout_ms, batching.timeout_ms)``. The front end asks before reading a body,
        so an overloaded service refuses without taking the upload.

        Raises:
            ShuttingDown: the scheduler is closing.
            QueueFull: ``max_queue_size`` requests are already waiting, or requests are
                waiting and the expected time to answer this one (:mod:`gre.admission`)
                exceeds its deadline: refused now rather than answered 504 later.
        """
        if self._closing:
            raise ShuttingDown("the service is shutting down")
        timeout = (
            self.batching.timeout_ms
            if timeout_ms is None
            else min(timeout_ms, self.batching.timeout_ms)
        )
        queued = len(self.queue)
        if queued >= self.queue.max_size:
            raise QueueFull(f"{queued} requests are waiting; the limit is {self.queue.max_size}")
        if queued:  # an empty queue always admits: the request goes to the next free replica
            live, batch = len(self._live), self.batching.max_batch_size
            expected_ms = self.wait.seconds(queued, live, batch) * 1e3
            if expected_ms > timeout:
                raise QueueFull(
                    f"{queued} requests are waiting: the expected {expected_ms:.0f} ms to answer "
                    f"this one exceeds its deadline of {timeout:.0f} ms"
                )
        return timeout

    def submit(self, image: bytes, top_k: int, timeout_ms: float | None = None) -> Pending:
        """Queue one request if :meth:`admit` admits it; its deadline is
        ``min(timeout_ms, batching.timeout_ms)`` from now.

        Raises:
            ShuttingDown, QueueFull: as :meth:`admit`.
        """
        timeout = self.admit(timeout_ms)
        loop = asyncio.get_running_loop()
        now = loop.time()
        item = Pending(image, top_k, now, now + timeout / 1e3, loop.create_future())
        self.queue.put(item)
        return item

    async def result(self, item: Pending) -> Completed:
        """Wait for ``item``'s answer until its deadline.

        Raises:
            DeadlineExceeded: the deadline passed (a queued request is then never dispatched).
            BatchError, ShuttingDown: as resolved by the dispatcher.
        """
        remaining = item.deadline - asyncio.get_running_loop().time()
        try:
            completed: Completed = await asyncio.wait_for(asyncio.shield(item.future), remaining)
        except TimeoutError:
            self.cancel(item)
            where = "in a batch" if item.dispatched is not None else "while queued"
            raise DeadlineExceeded(f"deadline passed {where}") from None
        return completed

    def cancel(self, item: Pending) -> None:
        """Drop ``item`` (its client went away or its deadline passed)."""
        self.queue.discard(item)
        if not item.future.done():
            item.future.cancel()

    @property
    def in_flight(self) -> int:
        """Requests handed to replicas and not yet answered."""
        return len(self._in_flight)

    def busy(self, name: str) -> bool:
        """Whether worker ``name`` is running a batch now."""
        return name in self._busy

    def serve(self, worker: Worker, timeout_s: float | None = None) -> asyncio.Task[None]:
        """Dispatch to ``worker`` in a task of its own until it is lost (then log and end)."""

        async def run() -> None:
            try:
                await self.run_worker(worker, timeout_s)
            except WorkerLost as exc:
                log.error("%s", exc)

        task = asyncio.create_task(run(), name=f"dispatch-{worker.name}")
        self._dispatchers[worker.name] = task
        return task

    async def run_worker(self, worker: Worker, timeout_s: float | None = None) -> None:
        """Take batches for ``worker`` whenever it is idle, until it is lost.

        A batch that fails in the worker (its forward raised) is answered :class:`BatchError`
        and dispatching goes on. A worker that dies (raises :class:`WorkerLost`) or takes
        longer than ``timeout_s`` over a batch is lost: each request of that batch is retried
        once at the head of the queue when another worker is live, else answered
        :class:`BatchError`; then :class:`WorkerLost` is raised to the caller, which must
        replace the worker.

        Raises:
            WorkerLost: the worker died or timed out.
        """
        loop = asyncio.get_running_loop()
        delay_s = self.batching.max_queue_delay_ms / 1e3
        self._live.add(worker.name)
        try:
            while True:
                batch = await self.queue.take(self.batching.max_batch_size, delay_s)
                batch = [item for item in batch if not item.future.done()]
                if not batch:
                    continue
                now = loop.time()
                for item in batch:
                    item.dispatched = now
                self._in_flight.update(batch)
                self._busy.add(worker.name)
                self.batch_sizes[len(batch)] += 1
                try:
                    work = worker.run([i.image for i in batch], [i.top_k for i in batch])
                    result = await asyncio.wait_for(work, timeout_s)
                except TimeoutError:
                    self._recover(batch, worker.name)
                    raise WorkerLost(
                        f"replica {worker.name} did not answer a batch of {len(batch)} "
                        f"within {timeout_s:.1f} s"
                    ) from None
                except WorkerLost:
                    self._recover(batch, worker.name)
                    raise
                except asyncio.CancelledError:
                    self._fail(batch, ShuttingDown("the service stopped before answering"))
                    raise
                except Exception as exc:
                    log.error("batch of %d failed on replica %s: %s", len(batch), worker.name, exc)
                    self._fail(batch, BatchError(f"the replica failed this batch: {exc}"))
                    continue
                finally:
                    self._in_flight.difference_update(batch)
                    self._busy.discard(worker.name)
                self.wait.observe(len(batch), loop.time() - now)
                self._complete(batch, result, now, worker.name)
        finally:
            self._live.discard(worker.name)

    def _complete(self, batch: list[Pending], result: BatchResult, now: float, name: str) -> None:
        if self.on_batch is not None:
            self.on_batch(name, len(batch), result)
        for item, outcome in zip(batch, result.outcomes, strict=True):
            if not item.future.done():
                item.future.set_result(
                    Completed(
                        outcome=outcome,
                        queue_ms=(now - item.enqueued) * 1e3,
                        preprocess_ms=result.preprocess_ms,
                        inference_ms=result.inference_ms,
                        batch_size=len(batch),
                        replica=name,
                    )
                )

    def _recover(self, batch: list[Pending], lost: str) -> None:
        others = bool(self._live - {lost})
        retry = [i for i in batch if not i.future.done() and i.attempts == 0 and others]
        for item in retry:
            item.attempts += 1
            item.dispatched = None
        self.queue.requeue_front(retry)
        why = "it was already retried once" if others else "no other replica is up"
        self._fail(
            [i for i in batch if i not in retry],
            BatchError(f"replica {lost} died while running this request and {why}"),
        )

    @staticmethod
    def _fail(batch: list[Pending], exc: Exception) -> None:
        for item in batch:
            if not item.future.done():
                item.future.set_exception(exc)

    def close_intake(self) -> None:
        """Refuse new requests (:class:`ShuttingDown`); queued ones are still served."""
        self._closing = True

    async def drain(self, timeout_s: float) -> bool:
        """Wait until the queue is empty and nothing is in flight; ``False`` on timeout."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while len(self.queue) or self._in_flight:
            if loop.time() >= end:
                return False
            await asyncio.sleep(0.01)
        return True

    async def close(self) -> None:
        """Stop the dispatchers started by :meth:`serve` and fail whatever is still queued with
        :class:`ShuttingDown`."""
        self._closing = True
        for task in self._dispatchers.values():
            task.cancel()
        for task in self._dispatchers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._dispatchers.clear()
        self.queue.drain(ShuttingDown("the service stopped before answering"))
