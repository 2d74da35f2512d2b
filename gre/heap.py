"""What a long-running gre process does with the objects it made while starting.

A gre process imports NumPy, OpenCV, Starlette, pydantic and prometheus_client and loads a
model before it serves: tens of thousands of objects that live as long as it does. CPython's
cyclic garbage collector walks every one of them in each full (oldest-generation) collection,
and a busy server runs one every few thousand requests: under ``wrk`` load that cost the front
end 15-20 us per request (``python -m benchmarks.overhead``; py-spy showed gc_collect_main).
:func:`freeze_startup_objects` moves them out of the collector's reach (``gc.freeze()``, as
Instagram's servers do), once the process is ready; what it allocates later is collected as
before.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("gre.heap")


def freeze_startup_objects(process: str) -> int:
    """Collect, then freeze (``gc.freeze``) every object this process holds now, so that no
    later collection walks them again; returns how many are frozen. Call once the process is
    ready to serve, and again after a reload: what an earlier call froze is thawed and
    collected first, so the old model's cycles are not kept. ``process``: its name, for the
    debug log line."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("%s: %d objects frozen out of the garbage collector's walks", process, frozen)
    return frozen
