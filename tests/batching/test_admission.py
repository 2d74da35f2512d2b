import asyncio

import pytest

from gre.batching.admission import WaitEstimate
from gre.batching.errors import DeadlineExceeded, QueueFull
from gre.batching.scheduler import Scheduler
from gre.config import BatchingConfig
from tests.fakes import FakeWorker, dispatch, stop_dispatch


def test_nothing_known_nothing_refused() -> None:
    assert WaitEstimate().seconds(queued=10_000, replicas=1, max_batch_size=32) == 0.0


def test_expected_wait_is_the_running_batch_the_queue_then_its_own_batch() -> None:
    estimate = WaitEstimate()
    estimate.observe(batch_size=4, duration_s=0.2)  # 50 ms per image
    assert estimate.seconds(queued=0, replicas=1, max_batch_size=4) == pytest.approx(0.2 + 0.05)
    # 9 ahead, then a batch of 4 (its own) answered at the batch's end; two replicas share it.
    expected = 0.2 + (9 + 4) * 0.05 / 2
    assert estimate.seconds(queued=9, replicas=2, max_batch_size=4) == pytest.approx(expected)


def test_the_estimate_follows_recent_batches_and_ignores_nonsense() -> None:
    estimate = WaitEstimate()
    estimate.observe(1, 0.1)
    for _ in range(50):
        estimate.observe(8, 0.16)  # faster per image in bigger batches
    estimate.observe(0, 1.0)
    estimate.observe(8, float("nan"))
    assert estimate.batch_s == pytest.approx(0.16, rel=1e-3)
    assert estimate.image_s == pytest.approx(0.02, rel=1e-3)


async def burst(scheduler: Scheduler, count: int, timeout_ms: float) -> tuple[int, int, int]:
    """Submit ``count`` requests at once; returns (refused, answered, past their deadline)."""
    accepted, refused = [], 0
    for i in range(count):
        try:
            accepted.append(scheduler.submit(bytes([i % 256]), 1, scheduler.admit(timeout_ms)))
        except QueueFull:
            refused += 1
    results = await asyncio.gather(
        *(scheduler.result(item) for item in accepted), return_exceptions=True
    )
    late = sum(isinstance(r, DeadlineExceeded) for r in results)
    return refused, len(results) - late, late


async def test_a_burst_beyond_the_deadline_is_refused_up_front_not_timed_out() -> None:
    scheduler = Scheduler(BatchingConfig(max_batch_size=4, max_queue_size=1000))
    dispatch(scheduler, FakeWorker(batch_s=0.05))
    await scheduler.result(scheduler.submit(b"\x00", 1))  # one batch: the speed is known
    refused, answered, late = await burst(scheduler, 60, timeout_ms=400)
    # 60 requests need 15 batches (750 ms); what fits in 400 ms is admitted, no more.
    assert refused > 0
    assert answered >= 3  # at least what the estimate says fits in 400 ms
    assert late == 0
    await stop_dispatch(scheduler)


async def test_an_empty_queue_admits_even_a_short_deadline() -> None:
    scheduler = Scheduler(BatchingConfig(max_batch_size=4))
    dispatch(scheduler, FakeWorker(batch_s=0.05))
    await scheduler.result(scheduler.submit(b"\x00", 1))
    item = scheduler.submit(b"\x01", 1, scheduler.admit(10))  # less than one batch: still tried
    with pytest.raises(DeadlineExceeded):
        await scheduler.result(item)
    await stop_dispatch(scheduler)
