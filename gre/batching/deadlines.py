"""Watched requests' deadlines on one event-loop timer.

A timer per request (``loop.call_at`` when it is watched, cancelled when it is answered) cost
~5 µs per request in uvloop (a handle, a libuv timer and its close), for a deadline that nearly
never fires. Here the deadlines wait in a heap and one timer is armed for the earliest. Each
entry holds its request weakly: an answered request is freed when its answer is sent, and
only its entry (a tuple and a weak reference) waits for its deadline to come up or for the
heap's next compaction, which keeps the heap within twice the requests still unanswered (plus
:data:`COMPACT_MIN`).
"""

from __future__ import annotations

import asyncio
import heapq
import math
import weakref
from collections.abc import Callable
from typing import Protocol

from gre.batching.queue import Pending

#: Entries the heap may hold before its first compaction.
COMPACT_MIN = 1024

_Entry = tuple[float, int, "weakref.ref[Pending]"]


class Clock(Protocol):
    """What :class:`Deadlines` needs of the event loop: its clock (s) and timers."""

    def time(self) -> float: ...

    def call_at(
        self, when: float, callback: Callable[[Clock], None], clock: Clock, /
    ) -> asyncio.TimerHandle: ...


class Deadlines:
    """Calls ``expire(item)`` once ``item.deadline`` (event-loop clock, s) has come, unless
    ``item.future`` is done by then or the item is gone.

    An expiry fires no earlier than its own timer would have: the timer armed for the earliest
    deadline fires at it, and then every entry due by then is expired.
    """

    def __init__(self, expire: Callable[[Pending], None]) -> None:
        self._expire = expire
        self._heap: list[_Entry] = []
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for = math.inf
        self._compact_at = COMPACT_MIN

    def __len__(self) -> int:
        """Entries held, answered ones included until they are dropped."""
        return len(self._heap)

    def add(self, item: Pending, loop: Clock) -> None:
        """Watch ``item``'s deadline (its ``id`` orders equal deadlines)."""
        heapq.heappush(self._heap, (item.deadline, item.id, weakref.ref(item)))
        if item.deadline < self._armed_for:
            self._arm(loop, item.deadline)
        if len(self._heap) >= self._compact_at:
            self._compact()

    def _arm(self, loop: Clock, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._fire, loop)
        self._armed_for = when

    def _fire(self, loop: Clock) -> None:
        # Due: everything up to the deadline the timer was armed for, which it may beat by
        # the clock's resolution, and whatever else has come since.
        due = max(loop.time(), self._armed_for)
        self._timer, self._armed_for = None, math.inf
        heap = self._heap
        while heap and heap[0][0] <= due:
            item = heapq.heappop(heap)[2]()
            if item is not None and not item.future.done():
                self._expire(item)
        while heap and _answered(heap[0]):  # arm for a request still waiting
            heapq.heappop(heap)
        if heap:
            self._arm(loop, heap[0][0])

    def _compact(self) -> None:
        """Drop the entries of answered requests: amortised O(1) per :meth:`add`."""
        self._heap = [entry for entry in self._heap if not _answered(entry)]
        heapq.heapify(self._heap)
        self._compact_at = max(COMPACT_MIN, 2 * len(self._heap))


def _answered(entry: _Entry) -> bool:
    item = entry[2]()
    return item is None or item.future.done()
