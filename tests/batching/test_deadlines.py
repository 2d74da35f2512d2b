"""The deadline heap on a fake clock: timers are recorded and fired by the test, no sleeps."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gre.batching import deadlines
from gre.batching.deadlines import Deadlines
from gre.batching.queue import Pending


class FakeTimer:
    def __init__(self, when: float, callback: Callable[..., None], args: tuple[Any, ...]) -> None:
        self.when, self.callback, self.args = when, callback, args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """The event loop's clock and timers, moved by the test (:meth:`advance`)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[FakeTimer] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., None], *args: Any) -> Any:
        timer = FakeTimer(when, callback, args)
        self.timers.append(timer)
        return timer

    @property
    def pending(self) -> list[FakeTimer]:
        return [t for t in self.timers if not t.cancelled]

    def advance(self, to: float) -> None:
        """Move the clock to ``to``, firing each timer due by then, earliest first."""
        while due := sorted((t for t in self.pending if t.when <= to), key=lambda t: t.when):
            timer = due[0]
            self.timers.remove(timer)
            self.now = max(self.now, timer.when)
            timer.callback(*timer.args)
        self.now = to


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    # Futures need a loop; nothing runs on it.
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def pending(loop: asyncio.AbstractEventLoop, deadline: float) -> Pending:
    return Pending(b"jpeg", 1, 0.0, deadline, loop.create_future())


def test_one_timer_for_many_deadlines_and_each_expires_in_order(
    loop: asyncio.AbstractEventLoop,
) -> None:
    clock, expired = FakeClock(), list[Pending]()
    watched = Deadlines(expired.append)
    items = [pending(loop, d) for d in (3.0, 1.0, 2.0, 2.0)]
    for item in items:
        watched.add(item, clock)
    # Armed for 3, then re-armed for 1 (the earlier deadline); later ones arm nothing.
    assert [t.when for t in clock.pending] == [1.0]
    clock.advance(1.5)
    assert expired == [items[1]]
    assert [t.when for t in clock.pending] == [2.0]
    clock.advance(2.0)
    assert expired == [items[1], items[2], items[3]]  # equal deadlines: in the order added
    clock.advance(10.0)
    assert expired == [items[1], items[2], items[3], items[0]]
    assert clock.pending == []
    assert len(watched) == 0


def test_answered_and_cancelled_requests_never_expire(loop: asyncio.AbstractEventLoop) -> None:
    clock, expired = FakeClock(), list[Pending]()
    watched = Deadlines(expired.append)
    answered, cancelled, late = (pending(loop, d) for d in (1.0, 2.0, 3.0))
    for item in (answered, cancelled, late):
        watched.add(item, clock)
    answered.future.set_result(None)
    cancelled.future.cancel()
    clock.advance(1.0)
    # The timer for the answered one fired; the next is for the late one, not the cancelled.
    assert expired == []
    assert [t.when for t in clock.pending] == [3.0]
    clock.advance(3.0)
    assert expired == [late]


def test_a_timer_that_fires_early_expires_what_it_was_armed_for(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """uvloop's timers have millisecond resolution: one may run before loop.time() reaches
    its deadline, and the request must still expire then, as a timer of its own would."""
    clock, expired = FakeClock(), list[Pending]()
    watched = Deadlines(expired.append)
    item = pending(loop, 1.0)
    watched.add(item, clock)
    (timer,) = clock.pending
    clock.now = 0.9995
    clock.timers.remove(timer)
    timer.callback(*timer.args)
    assert expired == [item]
    assert clock.pending == []


def test_answered_requests_are_freed_and_their_entries_compacted(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deadlines, "COMPACT_MIN", 8)
    clock, expired = FakeClock(), list[Pending]()
    watched = Deadlines(expired.append)
    waiting = [pending(loop, 100.0 + i) for i in range(3)]
    for item in waiting:
        watched.add(item, clock)
    answered = []
    for i in range(100):
        item = pending(loop, 10.0 + i)
        watched.add(item, clock)
        item.future.set_result(None)
        answered.append(weakref.ref(item))
        del item
        assert answered[-1]() is None  # freed at once: the heap holds it weakly
        # Entries wait for a compaction: never more than twice the live ones, plus 8.
        assert len(watched) <= 2 * len(waiting) + 8
    clock.advance(200.0)
    assert expired == waiting
