"""A fake replica for scheduler unit tests (the only place a fake engine is used)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from gre.batching.errors import ReplicaLost
from gre.batching.scheduler import Scheduler, Worker
from gre.messages import BatchResult, Prediction


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

    async def run(self, images: Sequence[bytes], top_ks: Sequence[int]) -> BatchResult:
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
