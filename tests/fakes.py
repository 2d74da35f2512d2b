"""A fake replica for scheduler unit tests (the only place a fake engine is used)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gre.classifier import BatchResult, Prediction


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
