"""Fake replicas: for scheduler unit tests and in-process tests of the HTTP layer (the only
places a fake stands in for a replica process)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Sequence
from typing import ClassVar

from gre.batching.errors import ReplicaLost, ReplicaStartError
from gre.batching.scheduler import Scheduler, Worker
from gre.messages import BatchResult, Outcome, Prediction, Ready, ReplicaSpec


class FakeWorker:
    """Answers each image with its own byte value as class index; records every batch.

    ``gate`` (when set) holds each batch until the test releases it; each batch takes
    ``batch_s`` (s) whatever its size.
    """

    def __init__(
        self, name: str = "fake", gate: asyncio.Event | None = None, batch_s: float = 0.001
    ) -> None:
        self.name = name
        self.gate = gate
        self.batch_s = batch_s
        self.batches: list[list[bytes]] = []
        self.started = asyncio.Event()

    async def run(
        self,
        images: Sequence[bytes],
        top_ks: Sequence[int],
        blobs: Sequence[tuple[str, ...]] = (),
    ) -> BatchResult:
        self.batches.append(list(images))
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(self.batch_s)  # a real replica's forward takes time; let others run
        outcomes = [Prediction((image[0],), (1.0,)) for image in images]
        return BatchResult(list(outcomes), 0.1, 0.2)


_loops: dict[int, list[asyncio.Task[None]]] = {}


def dispatch(scheduler: Scheduler, worker: Worker, timeout_s: float | None = None) -> None:
    """Run ``scheduler``'s dispatch loop for ``worker`` in a task, as the replica pool does
    for each ready replica; a lost worker ends its loop."""

    async def loop() -> None:
        with contextlib.suppress(ReplicaLost):
            await scheduler.run_worker(worker, timeout_s)

    _loops.setdefault(id(scheduler), []).append(asyncio.create_task(loop()))


async def stop_dispatch(scheduler: Scheduler) -> None:
    """Close ``scheduler`` and end the loops :func:`dispatch` started for it."""
    scheduler.close()
    tasks = _loops.pop(id(scheduler), [])
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class FakeReplica:
    """A replica handle without a process, for in-process tests of the HTTP layer: the pool
    drives it as it drives :class:`gre.replicas.replica.Replica`.

    Each image is answered by ``answer(image, top_k)`` (default: class 0 at 0.75, class 1 at
    0.25). ``gate`` (a :class:`threading.Event`, when set) holds each batch until released;
    ``started`` is set when a batch arrives; ``fail`` (an exception) is raised by every batch;
    ``rss_bytes`` is reported after each batch. While :attr:`fail_start` is set, every new
    replica fails to start with it.
    """

    def __init__(self, spec: ReplicaSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.pid: int | None = None
        self.batches: list[list[bytes]] = []
        self.started = threading.Event()
        self.gate: threading.Event | None = None
        self.fail: Exception | None = None
        self.answer: Callable[[bytes, int], Outcome] = lambda image, k: Prediction(
            (0, 1)[:k], (0.75, 0.25)[:k]
        )
        self.rss_bytes = 0
        self.stopped = False
        self._exited: asyncio.Future[int] | None = None
        FakeReplica.made.append(self)

    #: Every FakeReplica made, newest last (tests reach theirs through it).
    made: ClassVar[list[FakeReplica]] = []
    #: The start-up error of every new replica while set.
    fail_start: ClassVar[str | None] = None
    #: While set, every new replica's start waits for it (a slow warm-up).
    start_gate: ClassVar[asyncio.Event | None] = None

    async def start(self, timeout_s: float) -> Ready:
        if FakeReplica.fail_start is not None:
            raise ReplicaStartError(f"replica {self.name} failed to start: {self.fail_start}")
        if FakeReplica.start_gate is not None:
            await FakeReplica.start_gate.wait()
        self.pid = os.getpid()
        self._exited = asyncio.get_running_loop().create_future()
        return Ready(self.pid, "fake", str(self.spec.device), self.spec.num_classes)

    async def run(
        self,
        images: Sequence[bytes],
        top_ks: Sequence[int],
        blobs: Sequence[tuple[str, ...]] = (),
    ) -> BatchResult:
        self.batches.append(list(images))
        self.started.set()
        while self.gate is not None and not self.gate.is_set():
            await asyncio.sleep(0.001)  # a threading.Event: the test's thread releases it
        if self.fail is not None:
            raise self.fail
        outcomes = [self.answer(image, k) for image, k in zip(images, top_ks, strict=True)]
        return BatchResult(outcomes, 0.1, 0.2, self.rss_bytes)

    async def wait(self) -> int:
        assert self._exited is not None
        return await self._exited

    async def stop(self, timeout_s: float = 10.0) -> int | None:
        self.stopped = True
        return await self.kill()

    async def kill(self) -> int | None:
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(0)
        return 0 if self._exited is not None else None
