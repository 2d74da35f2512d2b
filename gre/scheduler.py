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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gre.batchqueue import BatchQueue, DeadlineExceeded, Pending
from gre.classifier import BatchResult, Outcome
from gre.config import BatchingConfig

log = logging.getLogger("gre.scheduler")


class ShuttingDown(Exception):
    """The service is draining and accepts no new requests (HTTP 503)."""


class BatchError(Exception):
    """The replica failed the batch this request was in (HTTP 503)."""


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
        self._closing = False

    def submit(self, image: bytes, top_k: int, timeout_ms: float | None = None) -> Pending:
        """Queue one request; its deadline is ``min(timeout_ms, batching.timeout_ms)``.

        Raises:
            ShuttingDown: the scheduler is closing.
            QueueFull: ``max_queue_size`` requests are already waiting.
        """
        if self._closing:
            raise ShuttingDown("the service is shutting down")
        loop = asyncio.get_running_loop()
        now = loop.time()
        timeout = (
            self.batching.timeout_ms
            if timeout_ms is None
            else min(timeout_ms, self.batching.timeout_ms)
        )
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

    def serve(self, worker: Worker) -> None:
        """Start dispatching batches to ``worker`` (idempotent per worker name)."""
        if worker.name not in self._dispatchers:
            task = asyncio.create_task(self._dispatch(worker), name=f"dispatch-{worker.name}")
            self._dispatchers[worker.name] = task

    async def _dispatch(self, worker: Worker) -> None:
        loop = asyncio.get_running_loop()
        delay_s = self.batching.max_queue_delay_ms / 1e3
        while True:
            batch = await self.queue.take(self.batching.max_batch_size, delay_s)
            batch = [item for item in batch if not item.future.done()]
            if not batch:
                continue
            now = loop.time()
            for item in batch:
                item.dispatched = now
            self._in_flight.update(batch)
            self.batch_sizes[len(batch)] += 1
            try:
                result = await worker.run([i.image for i in batch], [i.top_k for i in batch])
            except asyncio.CancelledError:
                self._fail(batch, ShuttingDown("the service stopped before answering"))
                raise
            except Exception as exc:
                log.error("batch of %d failed on replica %s: %s", len(batch), worker.name, exc)
                self._fail(batch, BatchError(f"the replica failed this batch: {exc}"))
                continue
            finally:
                self._in_flight.difference_update(batch)
            for item, outcome in zip(batch, result.outcomes, strict=True):
                if not item.future.done():
                    item.future.set_result(
                        Completed(
                            outcome=outcome,
                            queue_ms=(now - item.enqueued) * 1e3,
                            preprocess_ms=result.preprocess_ms,
                            inference_ms=result.inference_ms,
                            batch_size=len(batch),
                            replica=worker.name,
                        )
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
        """Stop the dispatchers and fail whatever is still queued with :class:`ShuttingDown`."""
        self._closing = True
        for task in self._dispatchers.values():
            task.cancel()
        for task in self._dispatchers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._dispatchers.clear()
        self.queue.drain(ShuttingDown("the service stopped before answering"))
