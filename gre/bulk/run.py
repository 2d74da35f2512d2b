"""The bulk pipeline: many image files through a :class:`~gre.service.Service`, so the
replica pool and its dynamic batching do the work, every core busy, answers in input order.

Files are read (and their headers checked, :func:`gre.model.imaging.check_image`) by a few
threads, submitted to the service's scheduler and answered by its replicas. At most
``window`` images are between reading and their answer being handed on (default
:func:`default_window`: two full batches per replica, enough to keep each replica's next
batch queued while one runs), so memory stays bounded and the queue never overflows; a
:class:`~gre.batching.errors.QueueFull` all the same is waited out. Answers are handed on
in input order: a later image's waits behind an earlier one's, at most ``window`` of them.

Nothing about one image aborts the run: an unreadable file, one that is no image, a
deadline passed or a replica lost become that image's :class:`~gre.messages.ItemError`.
Only replicas that can no longer be started end it (:class:`BulkError`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gre.batching.errors import DeadlineExceeded, QueueFull, ReplicaError, ShuttingDown
from gre.batching.queue import Pending
from gre.config import Config
from gre.messages import ItemError, Outcome
from gre.model.engines import unknown_blobs_error
from gre.model.imaging import ImageError, check_image
from gre.service import Service

#: Threads that read files and check their headers (I/O bound: more than the cores).
READ_THREADS = 4
#: How long to wait before asking again when the queue was full, s.
QUEUE_FULL_WAIT_S = 0.05


class BulkError(RuntimeError):
    """The run cannot go on: the replicas cannot be started any more, or the service
    stopped under it; the message says why."""


class BlobError(ValueError):
    """A ``--features`` blob that the net lacks; the message lists the valid ones."""


@dataclass(frozen=True)
class Item:
    """One input's answer: its ``sample_id`` (the path), its outcome (a
    :class:`~gre.messages.Prediction` with the blobs asked for, or an
    :class:`~gre.messages.ItemError`), and the model's labels (``None``: class numbers)."""

    sample_id: str
    outcome: Outcome
    labels: list[str] | None

    @property
    def failed(self) -> bool:
        """Whether the image could not be classified."""
        return isinstance(self.outcome, ItemError)


@dataclass(frozen=True)
class Summary:
    """What a run did: ``images`` answered (rows), ``errors`` among them, ``seconds`` from
    the first submission to the last answer, and ``startup_s`` (starting the replicas)."""

    images: int
    errors: int
    seconds: float
    startup_s: float = 0.0

    @property
    def images_per_s(self) -> float:
        """Images answered per second of the run (images/s; 0 for an empty run)."""
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """``classified N images in S s: X images/s (E errors)``: the closing line."""
        return (
            f"classified {self.images} images in {self.seconds:.1f} s: "
            f"{self.images_per_s:.1f} images/s ({self.errors} errors)"
        )


def check_blobs(known: Sequence[str], asked: Sequence[str]) -> None:
    """Refuse blob names the net lacks.

    Raises:
        BlobError: one of ``asked`` is not in ``known``; names the net's blobs.
    """
    error = unknown_blobs_error(asked, known)
    if error is not None:
        raise BlobError(str(error))


def default_window(service: Service) -> int:
    """Images in flight by default: ``2 x replicas x batching.max_batch_size``."""
    return 2 * len(service.specs) * service.config.batching.max_batch_size


def read_image(path: str, max_pixels: int) -> bytes | ItemError:
    """The file's bytes once its header passes :func:`~gre.model.imaging.check_image`;
    else ``ItemError("unreadable", ...)`` (an :class:`OSError`) or the image's error."""
    try:
        data = Path(path).read_bytes()
        check_image(data, max_pixels)
    except OSError as exc:
        return ItemError("unreadable", f"{path}: {exc.strerror or exc}")
    except ImageError as exc:
        return ItemError(exc.code, str(exc))
    return data


class _Pipeline:
    """One run's state: the service, what each image asks, and the queue's room."""

    def __init__(
        self, service: Service, top_k: int, blobs: tuple[str, ...], reader: ThreadPoolExecutor
    ) -> None:
        self.service = service
        self.top_k = top_k
        self.blobs = blobs
        self.reader = reader
        self.max_pixels = service.config.server.max_pixels
        self.room = asyncio.Event()  # set whenever an answer frees a queue place

    async def classify(self, path: str) -> Outcome:
        loaded = await asyncio.get_running_loop().run_in_executor(
            self.reader, read_image, path, self.max_pixels
        )
        if isinstance(loaded, ItemError):
            return loaded
        pending = await self.submit(loaded)
        try:
            completed = await self.service.result(pending)
        except DeadlineExceeded as exc:
            timeout = self.service.config.batching.timeout_ms
            return ItemError(
                "deadline_exceeded",
                f"{exc} (timeout_ms {timeout:.0f}): lower --batch-size or raise "
                "--set timeout_ms=...",
            )
        except ReplicaError as exc:
            return ItemError("replica_failed", str(exc))
        except asyncio.CancelledError:
            self.service.cancel(pending)  # the run is ending: don't make the drain wait
            raise
        finally:
            self.room.set()
        return completed.outcome

    async def submit(self, image: bytes) -> Pending:
        while True:
            try:
                return self.service.submit(self.service.admit(None), image, self.top_k, self.blobs)
            except QueueFull:
                self.room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.room.wait(), QUEUE_FULL_WAIT_S)


async def classify_all(
    service: Service,
    paths: Sequence[str],
    top_k: int,
    blobs: tuple[str, ...],
    on_item: Callable[[Item], None],
    window: int | None = None,
) -> Summary:
    """Classify ``paths`` on the started ``service``, calling ``on_item`` with each one's
    :class:`Item` in input order; returns the :class:`Summary`.

    Args:
        top_k: classes per image (0: none, features only).
        blobs: blobs to return with each image (names of ``service.blob_names``).
        window: images in flight at most (default :func:`default_window`).

    Raises:
        BulkError: the replicas failed for good (``service.on_fatal``), or the service
            stopped under the run.
    """
    loop = asyncio.get_running_loop()
    fatal: asyncio.Future[str] = loop.create_future()
    service.on_fatal = lambda error: None if fatal.done() else fatal.set_result(error)
    labels = service.model.labels
    limit = max(1, window or default_window(service))
    errors = 0
    start = time.perf_counter()
    in_flight: deque[tuple[str, asyncio.Task[Outcome]]] = deque()

    async def hand_on() -> None:
        nonlocal errors
        path, task = in_flight[0]
        waits: set[asyncio.Future[Any]] = {task, fatal}
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            raise BulkError(f"the replicas failed: {fatal.result()}")
        try:
            outcome = task.result()
        except ShuttingDown as exc:
            raise BulkError(f"the service stopped: {exc}") from exc
        in_flight.popleft()
        item = Item(path, outcome, labels)
        errors += item.failed
        on_item(item)

    with ThreadPoolExecutor(READ_THREADS, thread_name_prefix="gre-read") as reader:
        pipeline = _Pipeline(service, top_k, blobs, reader)
        try:
            for path in paths:
                if len(in_flight) >= limit:
                    await hand_on()
                in_flight.append((path, asyncio.create_task(pipeline.classify(path))))
            while in_flight:
                await hand_on()
        finally:
            for _, task in in_flight:
                task.cancel()
            await asyncio.gather(*(task for _, task in in_flight), return_exceptions=True)
    return Summary(len(paths), errors, time.perf_counter() - start)


async def run_service(
    config: Config,
    paths: Sequence[str],
    top_k: int,
    blobs: tuple[str, ...],
    on_item: Callable[[Item], None],
    window: int | None = None,
    before_start: Callable[[], None] = lambda: None,
) -> Summary:
    """Start a :class:`~gre.service.Service` for ``config``, :func:`classify_all` on it,
    drain and stop it (also on error or cancellation). ``before_start`` is called once the
    model and ``blobs`` are checked, before the replicas start (e.g. to create the output,
    so that a path that cannot be written fails in seconds, not after the start-up).

    Raises:
        gre.service.StartupError: the model or its replicas cannot be loaded.
        BlobError: a blob of ``blobs`` the net lacks (before any replica starts).
        BulkError: as :func:`classify_all`.
    """
    service = Service(config)
    check_blobs(service.blob_names, blobs)
    before_start()
    begin = time.perf_counter()
    try:
        await service.start()
        startup_s = time.perf_counter() - begin
        summary = await classify_all(service, paths, top_k, blobs, on_item, window)
    finally:
        await service.stop()
    return Summary(summary.images, summary.errors, summary.seconds, startup_s)


def run(
    config: Config,
    paths: Sequence[str],
    top_k: int,
    blobs: tuple[str, ...],
    on_item: Callable[[Item], None],
    window: int | None = None,
    before_start: Callable[[], None] = lambda: None,
) -> Summary:
    """:func:`run_service` in a new event loop (the blocking entry point; same errors)."""
    return asyncio.run(run_service(config, paths, top_k, blobs, on_item, window, before_start))
