"""The request queue that replicas take batches from.

Work-conserving: an idle replica takes up to ``max_batch_size`` waiting requests at once, as
long as their images total at most ``max_batch_bytes`` (the first is taken whatever its size).
With ``max_queue_delay_s > 0`` it may wait, counted from the oldest waiting request's arrival,
for a fuller batch. Requests past their deadline are never handed out.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
from dataclasses import dataclass, field
from typing import Any

from gre.batching.errors import DeadlineExceeded, QueueFull

_ids = itertools.count()


class RequestState(enum.Enum):
    """Where a request is, as vLLM's ``RequestStatus``: waiting in the queue, in a batch on a
    replica, or answered (its future is done)."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Pending:
    """A request waiting for, or in, a batch.

    Attributes:
        image: the encoded image bytes.
        top_k: how many classes to answer.
        enqueued: arrival time, event-loop clock (s).
        deadline: when it must be answered by, event-loop clock (s).
        future: resolved with the outcome, or an exception such as :class:`DeadlineExceeded`.
        dispatched: when it was last handed to a replica (s), ``None`` while queued.
        blobs: blob names whose values to return with the top-k (``/api/features``).
    """

    image: bytes
    top_k: int
    enqueued: float
    deadline: float
    future: asyncio.Future[Any]
    dispatched: float | None = None
    blobs: tuple[str, ...] = ()
    #: Times it was handed to a replica that then died (it is retried once elsewhere).
    attempts: int = 0
    id: int = field(default_factory=lambda: next(_ids))

    @property
    def state(self) -> RequestState:
        """Finished once its future is done; running while handed to a replica; else queued."""
        if self.future.done():
            return RequestState.FINISHED
        return RequestState.QUEUED if self.dispatched is None else RequestState.RUNNING


class BatchQueue:
    """FIFO of :class:`Pending` with O(1) removal, bounded by ``max_size``."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._items: dict[int, Pending] = {}  # insertion-ordered: the FIFO
        self._arrival = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def check_room(self) -> None:
        """The one check of ``max_size``.

        Raises:
            QueueFull: ``max_size`` requests are waiting.
        """
        if len(self._items) >= self.max_size:
            raise QueueFull(
                f"{len(self._items)} requests are waiting; the limit is {self.max_size}"
            )

    def put(self, item: Pending) -> None:
        """Enqueue.

        Raises:
            QueueFull: as :meth:`check_room`.
        """
        self.check_room()
        self._items[item.id] = item
        self._arrival.set()

    def requeue_front(self, items: list[Pending]) -> None:
        """Put ``items`` (already admitted once) back at the head, oldest first, even past
        ``max_size``: they were accepted before and must not be refused now."""
        if items:
            self._items = {i.id: i for i in items} | self._items
            self._arrival.set()

    def discard(self, item: Pending) -> bool:
        """Remove ``item`` if still queued; returns whether it was."""
        return self._items.pop(item.id, None) is not None

    def expire(self, now: float) -> None:
        """Fail every queued request whose deadline has passed with :class:`DeadlineExceeded`."""
        for item in [i for i in self._items.values() if i.deadline <= now]:
            del self._items[item.id]
            if not item.future.done():
                item.future.set_exception(DeadlineExceeded("deadline passed while queued"))

    def fail_all(self, exc: BaseException) -> None:
        """Fail every queued request with ``exc`` and empty the queue."""
        for item in self._items.values():
            if not item.future.done():
                item.future.set_exception(exc)
        self._items.clear()

    async def take(
        self, max_batch_size: int, max_queue_delay_s: float, max_batch_bytes: int | None = None
    ) -> list[Pending]:
        """Wait for requests, then return up to ``max_batch_size`` of them, oldest first,
        whose images total at most ``max_batch_bytes`` bytes (``None``: no bound); the oldest
        is returned alone when it is larger.

        While the batch is not full (fewer than ``max_batch_size`` waiting, and their images
        within ``max_batch_bytes``), waits until the oldest has waited ``max_queue_delay_s``
        or the batch fills, whichever is first.
        """
        loop = asyncio.get_running_loop()
        while True:
            self.expire(loop.time())
            if not self._items:
                self._arrival.clear()
                await self._arrival.wait()
                continue
            batch = self._head(max_batch_size, max_batch_bytes)
            full = len(batch) == max_batch_size or len(batch) < len(self._items)
            if not full and max_queue_delay_s > 0:
                oldest = batch[0]
                remaining = oldest.enqueued + max_queue_delay_s - loop.time()
                if remaining > 0:
                    self._arrival.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._arrival.wait(), remaining)
                    continue
            for item in batch:
                del self._items[item.id]
            return batch

    def _head(self, max_batch_size: int, max_batch_bytes: int | None) -> list[Pending]:
        """The oldest requests that make one batch: at most ``max_batch_size``, their images
        within ``max_batch_bytes`` (the first whatever its size)."""
        if max_batch_bytes is None:
            return list(itertools.islice(self._items.values(), max_batch_size))
        batch: list[Pending] = []
        total = 0
        for item in self._items.values():
            total += len(item.image)
            if len(batch) == max_batch_size or (batch and total > max_batch_bytes):
                break
            batch.append(item)
        return batch
