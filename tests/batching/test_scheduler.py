import asyncio
from collections.abc import Callable

import pytest

from gre.batching.errors import DeadlineExceeded, QueueFull, ShuttingDown
from gre.batching.queue import Pending
from gre.batching.scheduler import Completed, Scheduler
from gre.config import BatchingConfig
from gre.messages import Prediction
from tests.fakes import FakeWorker, dispatch, stop_dispatch


def image(i: int) -> bytes:
    return bytes([i])


async def answers(scheduler: Scheduler, items: list[Pending]) -> list[Completed]:
    return list(await asyncio.gather(*(scheduler.result(i) for i in items)))


async def test_each_request_gets_its_own_answer_and_max_batch_size_holds() -> None:
    scheduler = Scheduler(BatchingConfig(max_batch_size=4))
    worker = FakeWorker()
    items = [scheduler.submit(image(i), 1) for i in range(10)]  # queued before any dispatch
    dispatch(scheduler, worker)
    results = await answers(scheduler, items)
    assert [r.outcome for r in results] == [Prediction((i,), (1.0,)) for i in range(10)]
    assert [len(b) for b in worker.batches] == [4, 4, 2]
    assert scheduler.batch_sizes == {4: 2, 2: 1}
    await stop_dispatch(scheduler)


async def test_work_conserving_without_delay() -> None:
    scheduler = Scheduler(BatchingConfig(max_batch_size=8, max_queue_delay_ms=0))
    worker = FakeWorker()
    dispatch(scheduler, worker)
    first = scheduler.submit(image(1), 1)
    await scheduler.result(first)
    assert worker.batches == [[image(1)]]  # dispatched alone: nothing else was waiting
    await stop_dispatch(scheduler)


async def test_queue_delay_is_honoured() -> None:
    scheduler = Scheduler(BatchingConfig(max_batch_size=8, max_queue_delay_ms=150))
    worker = FakeWorker()
    dispatch(scheduler, worker)
    first = scheduler.submit(image(1), 1)
    await asyncio.sleep(0.05)
    second = scheduler.submit(image(2), 1)
    done = await answers(scheduler, [first, second])
    assert worker.batches == [[image(1), image(2)]]  # waited, and the second joined
    assert first.dispatched is not None
    assert first.dispatched - first.enqueued >= 0.15 - 1e-3
    assert done[0].queue_ms >= 150 - 1
    await stop_dispatch(scheduler)


async def test_full_batch_does_not_wait_for_the_delay() -> None:
    scheduler = Scheduler(BatchingConfig(max_batch_size=3, max_queue_delay_ms=30_000))
    worker = FakeWorker()
    dispatch(scheduler, worker)
    items = [scheduler.submit(image(i), 1) for i in range(3)]
    await asyncio.wait_for(answers(scheduler, items), timeout=10)  # far below the 30 s delay
    assert [len(b) for b in worker.batches] == [3]
    await stop_dispatch(scheduler)


async def test_batches_stop_at_max_batch_bytes_and_a_larger_image_goes_alone() -> None:
    scheduler = Scheduler(BatchingConfig(max_batch_size=8, max_batch_bytes=10))
    worker = FakeWorker()
    sizes = [4, 4, 4, 11, 2, 3, 5]
    items = [scheduler.submit(image(i) * size, 1) for i, size in enumerate(sizes)]
    dispatch(scheduler, worker)
    results = await answers(scheduler, items)
    assert [r.outcome for r in results] == [Prediction((i,), (1.0,)) for i in range(7)]
    # 4+4, then 4 (4+11 > 10), 11 alone, 2+3+5 = 10 exactly.
    assert [[len(i) for i in batch] for batch in worker.batches] == [[4, 4], [4], [11], [2, 3, 5]]
    await stop_dispatch(scheduler)


async def test_a_batch_full_of_bytes_does_not_wait_for_the_delay() -> None:
    config = BatchingConfig(max_batch_size=8, max_batch_bytes=10, max_queue_delay_ms=30_000)
    scheduler = Scheduler(config)
    worker = FakeWorker()
    dispatch(scheduler, worker)
    items = [scheduler.submit(image(i) * 6, 1) for i in range(2)]  # 12 bytes: two batches
    first = await asyncio.wait_for(scheduler.result(items[0]), timeout=10)  # not 30 s
    assert first.outcome == Prediction((0,), (1.0,))
    assert worker.batches[0] == [image(0) * 6]
    await stop_dispatch(scheduler)


async def test_deadline_passed_while_queued_is_never_dispatched() -> None:
    gate = asyncio.Event()
    scheduler = Scheduler(BatchingConfig(max_batch_size=1))
    worker = FakeWorker(gate=gate)
    dispatch(scheduler, worker)
    busy = scheduler.submit(image(1), 1)
    await worker.started.wait()  # the only replica is now busy
    late = scheduler.submit(image(2), 1, scheduler.admit(20))
    with pytest.raises(DeadlineExceeded, match="while queued"):
        await scheduler.result(late)
    gate.set()
    await scheduler.result(busy)
    await asyncio.sleep(0.01)
    assert worker.batches == [[image(1)]]
    assert len(scheduler.queue) == 0
    await stop_dispatch(scheduler)


async def test_header_timeout_only_lowers_the_deadline() -> None:
    scheduler = Scheduler(BatchingConfig(timeout_ms=100))
    item = scheduler.submit(image(1), 1, scheduler.admit(60_000))
    assert item.deadline - item.enqueued == pytest.approx(0.1)
    await stop_dispatch(scheduler)


async def test_bound_refuses_beyond_max_queue_size() -> None:
    scheduler = Scheduler(BatchingConfig(max_queue_size=2))
    scheduler.submit(image(1), 1)
    scheduler.submit(image(2), 1)
    with pytest.raises(QueueFull):
        scheduler.submit(image(3), 1)
    await stop_dispatch(scheduler)


async def test_disconnected_request_is_dropped() -> None:
    gate = asyncio.Event()
    scheduler = Scheduler(BatchingConfig(max_batch_size=4))
    worker = FakeWorker(gate=gate)
    dispatch(scheduler, worker)
    busy = scheduler.submit(image(1), 1)
    await worker.started.wait()
    gone = scheduler.submit(image(2), 1)
    kept = scheduler.submit(image(3), 1)
    scheduler.cancel(gone)  # what the HTTP layer does when the client disconnects
    assert len(scheduler.queue) == 1
    gate.set()
    await answers(scheduler, [busy, kept])
    assert worker.batches == [[image(1)], [image(3)]]
    await stop_dispatch(scheduler)


async def test_several_workers_share_one_queue() -> None:
    scheduler = Scheduler(BatchingConfig(max_batch_size=2))
    workers = [FakeWorker("a"), FakeWorker("b")]
    items = [scheduler.submit(image(i), 1) for i in range(8)]
    for worker in workers:
        dispatch(scheduler, worker)
    results = await answers(scheduler, items)
    assert [r.outcome.indices[0] for r in results] == list(range(8))  # type: ignore[union-attr]
    assert {r.replica for r in results} == {"a", "b"}
    await stop_dispatch(scheduler)


async def test_drain_then_refuse() -> None:
    scheduler = Scheduler(BatchingConfig())
    worker = FakeWorker()
    dispatch(scheduler, worker)
    item = scheduler.submit(image(5), 1)
    scheduler.close_intake()
    with pytest.raises(ShuttingDown):
        scheduler.submit(image(6), 1)
    assert await scheduler.wait_idle(5)
    assert (await scheduler.result(item)).outcome == Prediction((5,), (1.0,))
    await stop_dispatch(scheduler)


async def test_watch_calls_back_with_the_answer_the_deadline_or_the_cancellation() -> None:
    """Scheduler.watch is result() by callback (the HTTP connection's direct answers)."""
    gate = asyncio.Event()
    scheduler = Scheduler(BatchingConfig(max_batch_size=1))
    worker = FakeWorker(gate=gate)
    dispatch(scheduler, worker)
    seen: dict[str, asyncio.Future[Completed]] = {}

    def record(name: str) -> Callable[[asyncio.Future[Completed]], None]:
        return lambda future: seen.__setitem__(name, future)

    answered = scheduler.submit(image(1), 1)
    scheduler.watch(answered, record("answered"))
    await worker.started.wait()  # the only replica holds the first batch
    late = scheduler.submit(image(2), 1, scheduler.admit(20))
    scheduler.watch(late, record("late"))
    gone = scheduler.submit(image(3), 1)
    scheduler.watch(gone, record("gone"))
    scheduler.cancel(gone)
    while "late" not in seen:  # its 20 ms deadline, while the replica is still busy
        await asyncio.sleep(0.005)
    assert isinstance(seen["late"].exception(), DeadlineExceeded)
    assert seen["gone"].cancelled()
    gate.set()
    while "answered" not in seen:
        await asyncio.sleep(0.001)
    assert seen["answered"].result().outcome == Prediction((1,), (1.0,))
    assert worker.batches == [[image(1)]]  # neither the late nor the cancelled one ran
    await stop_dispatch(scheduler)
