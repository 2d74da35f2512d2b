"""gre.heap: the start-up objects leave the garbage collector's walks; later ones do not."""

import gc
import weakref

from gre.heap import freeze_startup_objects


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic collector frees it


def test_start_up_objects_are_frozen_and_later_cycles_are_still_collected() -> None:
    try:
        kept = Node()
        frozen = freeze_startup_objects("test")
        # Frozen objects can only leave the permanent generation (freed, e.g. by another of
        # pytest's threads dropping its last reference), never join it without a freeze.
        assert 0 < gc.get_freeze_count() <= frozen
        # Frozen: in no generation, so no collection walks it (get_objects lists those).
        assert all(o is not kept for o in gc.get_objects())
        later = Node()
        gone = weakref.ref(later)
        del later
        gc.collect()
        assert gone() is None  # a cycle made after the freeze is collected as before
        # Again (a reload): what was frozen is thawed and collected first, then frozen.
        abandoned = weakref.ref(kept)
        del kept
        freeze_startup_objects("test")
        assert abandoned() is None  # a frozen cycle dropped since is freed by the next call
    finally:
        gc.unfreeze()
