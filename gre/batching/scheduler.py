"""The dynamic batcher: one queue, one dispatch loop per replica.

Each dispatch loop (:meth:`Scheduler.run_worker`, run by the replica pool for each ready
replica) takes a batch from the queue when its replica is idle, runs it, and resolves the
requests' futures. Requests resolve with a :class:`Completed`, or an exception of
:mod:`gre.batching.errors`: :class:`QueueFull`, :class:`DeadlineExceeded`,
:class:`ShuttingDown` or a :class:`ReplicaError`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from gre.batching.admission import WaitEstimate
from gre.batching.deadlines import Deadlines
from gre.batching.errors import (
    DeadlineExceeded,
    QueueFull,
    ReplicaBatchError,
    ReplicaError,
    ReplicaLost,
    ShuttingDown,
)
from gre.batching.queue import BatchQueue, Pending, RequestState
from gre.config import BatchingConfig
from gre.messages import BatchResult, Outcome

log = logging.getLogger("gre.batching.scheduler")


class Worker(Protocol):
    """What the scheduler dispatches to: a replica, or a fake one in tests."""

    name: str

    async def run(
        self,
        images: Sequence[bytes],
        top_ks: Sequence[int],
        blobs: Sequence[tuple[str, ...]] = (),
    ) -> BatchResult:
        """Classify a batch; outcomes in request order. ``blobs``: per image the blobs to
        return (empty when no image of the batch asks for any).

        Raises:
            ReplicaLost: the worker is gone; it gets no more batches.
            Exception: anything else fails this batch only (:class:`ReplicaBatchError`).
        """
        ...


@dataclass(frozen=True)
class Admission:
    """A request the scheduler admitted (:meth:`Scheduler.admit`), with its deadline's
    length ``timeout_ms`` (ms): ``min`` of the client's and ``batching.timeout_ms``."""

    timeout_ms: float


class Completed(NamedTuple):
    """A request's answer and where its time went (ms). Immutable, as a tuple: one is made
    per request, and a frozen dataclass costs 3x a tuple to make (1.2 vs 0.4 us)."""

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
        self._in_flight: set[Pending] = set()
        self._live: set[str] = set()
        self._busy: set[str] = set()
        #: Called with (worker name, batch size, result) after each answered batch.
        self.on_batch: Callable[[str, int, BatchResult], None] | None = None
        #: The replicas' recent speed, for refusing requests that could not finish in time.
        self.wait = WaitEstimate()
        self._closing = False
        self._deadlines = Deadlines(self._expire)

    def admit(self, timeout_ms: float | None = None) -> Admission:
        """Decide, once per request, whether it would be queued now with a deadline of
        ``min(timeout_ms, batching.timeout_ms)``. The front end asks before reading a body,
        so an overloaded service refuses without taking the upload.

        Raises:
            ShuttingDown: the scheduler is closing.
            QueueFull: ``max_queue_size`` requests are already waiting, or requests are
                waiting and the expected time to answer this one (:mod:`gre.batching.admission`)
                exceeds its deadline: refused now rather than answered 504 later.
        """
        self._check_open()
        timeout = (
            self.batching.timeout_ms
            if timeout_ms is None
            else min(timeout_ms, self.batching.timeout_ms)
        )
        self.queue.check_room()
        queued = len(self.queue)
        if queued:  # an empty queue always admits: the request goes to the next free replica
            live, batch = len(self._live), self.batching.max_batch_size
            expected_ms = self.wait.seconds(queued, live, batch) * 1e3
            if expected_ms > timeout:
                raise QueueFull(
                    f"{queued} requests are waiting: the expected {expected_ms:.0f} ms to answer "
                    f"this one exceeds its deadline of {timeout:.0f} ms"
                )
        return Admission(timeout)

    def submit(
        self,
        image: bytes,
        top_k: int,
        admission: Admission | None = None,
        blobs: tuple[str, ...] = (),
    ) -> Pending:
        """Queue one request; its deadline is ``admission.timeout_ms`` from now. Without an
        ``admission`` it is admitted here (:meth:`admit`). ``blobs``: the blobs to return
        with its top ``top_k`` (0: features only), batched with every other request.

        Raises:
            ShuttingDown: the scheduler closed since the admission.
            QueueFull: as :meth:`admit`; with an admission, only when the queue filled up
                since (while the body was read).
        """
        admission = admission or self.admit()
        self._check_open()
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = now + admission.timeout_ms / 1e3
        item = Pending(image, top_k, now, deadline, loop.create_future(), blobs=blobs)
        self.queue.put(item)
        return item

    def _check_open(self) -> None:
        if self._closing:
            raise ShuttingDown("the service is shutting down")

    async def result(self, item: Pending) -> Completed:
        """Wait for ``item``'s answer until its deadline.

        Raises:
            DeadlineExceeded: the deadline passed (a queued request is then never dispatched).
            ReplicaError, ShuttingDown: as resolved by the dispatch loop.
            asyncio.CancelledError: :meth:`cancel` dropped it (its client went away).
        """
        # One timer on the loop rather than wait_for + shield: two tasks fewer per request.
        timer = self._arm_deadline(item)
        try:
            completed: Completed = await item.future
        finally:
            timer.cancel()
        return completed

    def watch(self, item: Pending, callback: Callable[[asyncio.Future[Completed]], None]) -> None:
        """:meth:`result` without a coroutine: ``callback`` is called (from the event loop)
        with ``item``'s future once it is done, at the latest at its deadline (then with
        :class:`DeadlineExceeded`); cancelled when :meth:`cancel` dropped it. The deadline
        waits among the others' on one timer (:class:`Deadlines`): ``callback`` always takes
        the future's outcome, so an expiry never goes unretrieved."""
        self._deadlines.add(item, asyncio.get_running_loop())
        item.future.add_done_callback(callback)

    def _arm_deadline(self, item: Pending) -> asyncio.TimerHandle:
        """The timer that fails ``item`` with :class:`DeadlineExceeded` at its deadline;
        cancel it once the answer is in (:meth:`result`, whose caller may abandon it: a
        deadline left armed would set an exception nobody retrieves)."""
        return asyncio.get_running_loop().call_at(item.deadline, self._expire, item)

    def _expire(self, item: Pending) -> None:
        """``item``'s deadline passed before its answer: fail it, and drop it if queued."""
        if not item.future.done():
            where = "in a batch" if item.state is RequestState.RUNNING else "while queued"
            self.queue.discard(item)
            item.future.set_exception(DeadlineExceeded(f"deadline passed {where}"))

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

    async def run_worker(
        self,
        worker: Worker,
        timeout_s: float | None = None,
        keep_going: Callable[[BatchResult], bool] | None = None,
    ) -> None:
        """Take batches for ``worker`` whenever it is idle, until it is lost or cancelled, or
        ``keep_going`` (asked after each answered batch, with its result) says no: then it
        returns, between batches, and the worker can be stopped with nothing in flight.

        A batch that fails in the worker (its forward raised) is answered
        :class:`ReplicaBatchError` and dispatching goes on. A worker that is gone (raises
        :class:`ReplicaLost`) or takes longer than ``timeout_s`` over a batch is lost: each
        request of that batch is retried once at the head of the queue when another worker is
        live, else answered :class:`ReplicaLost`; then :class:`ReplicaLost` is raised to the
        caller, which must replace the worker. Cancelled, it answers its batch in progress
        :class:`ShuttingDown`.

        Raises:
            ReplicaLost: the worker is gone or timed out.
        """
        loop = asyncio.get_running_loop()
        delay_s = self.batching.max_queue_delay_ms / 1e3
        self._live.add(worker.name)
        try:
            while True:
                batch = await self.queue.take(
                    self.batching.max_batch_size, delay_s, self.batching.max_batch_bytes
                )
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
                    # Blob names only when asked: classify-only batches pickle nothing more.
                    blobs = [i.blobs for i in batch] if any(i.blobs for i in batch) else []
                    work = worker.run([i.image for i in batch], [i.top_k for i in batch], blobs)
                    result = await asyncio.wait_for(work, timeout_s)
                except TimeoutError:
                    self._recover(batch, worker.name)
                    raise ReplicaLost(
                        f"replica {worker.name} did not answer a batch of {len(batch)} "
                        f"within {timeout_s:.1f} s"
                    ) from None
                except ReplicaLost:
                    self._recover(batch, worker.name)
                    raise
                except asyncio.CancelledError:
                    self._fail(batch, ShuttingDown("the service stopped before answering"))
                    raise
                except Exception as exc:
                    log.error("batch of %d failed on replica %s: %s", len(batch), worker.name, exc)
                    self._fail(batch, ReplicaBatchError(f"the replica failed this batch: {exc}"))
                    continue
                finally:
                    self._in_flight.difference_update(batch)
                    self._busy.discard(worker.name)
                self.wait.observe(len(batch), loop.time() - now)
                self._complete(batch, result, now, worker.name)
                if keep_going is not None and not keep_going(result):
                    return
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
            ReplicaLost(f"replica {lost} died while running this request and {why}"),
        )

    @staticmethod
    def _fail(batch: list[Pending], exc: ReplicaError | ShuttingDown) -> None:
        for item in batch:
            if not item.future.done():
                item.future.set_exception(exc)

    def close_intake(self) -> None:
        """Refuse new requests (:class:`ShuttingDown`); queued ones are still served."""
        self._closing = True

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until the queue is empty and nothing is in flight; ``False`` on timeout."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while len(self.queue) or self._in_flight:
            if loop.time() >= end:
                return False
            await asyncio.sleep(0.01)
        return True

    def close(self) -> None:
        """Refuse new requests and answer whatever is still queued :class:`ShuttingDown`
        (dispatch loops end when the pool cancels them)."""
        self._closing = True
        self.queue.fail_all(ShuttingDown("the service stopped before answering"))
