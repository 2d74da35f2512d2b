"""glibc malloc's thresholds, set for the front-end processes that hold photos' bodies.

With HTTP workers, the main process copies each classify body out of its worker's body ring
into a fresh ``bytes`` (100 kB to a few MB for a photo) and frees it once answered, a batch
of them at a time. glibc serves a block of 128 kB or more with an ``mmap`` of its own until
one such block is freed (then that size becomes the threshold), and gives the top of the heap
back to the kernel whenever more than twice that lies free there: each batch's bodies, freed
together, went back, and the next batch's touched fresh pages. Under load (cat.jpg, 140 kB,
``workers = 2``) the main process took 13 to 16 minor page faults per photo, and about a
quarter of its CPU per photo: 216-256 us against 174-186 with these thresholds, which leave
it none (``/proc/PID/stat``, 8 s windows on this project's 2-core VM).

:func:`keep_freed_memory` sets, from the start, the thresholds glibc's own rule reaches once a
block of its largest mmap threshold (32 MiB on 64-bit) has been freed: blocks under 32 MiB come
from the heap, and the heap keeps up to 64 MiB that it freed for the next ones. Only the main
process with workers is set so: its allocations are the bodies, whole; a replica's are batch
arrays, whose sizes glibc's own rule already follows (set to a lower mmap threshold, a replica
faulted 20 times per image instead of none).

An HTTP worker is the other way round (:func:`return_large_bodies`): it passes each body on
as soon as it is whole, while the main process holds it until it is answered, so what a
worker's heap keeps of bodies it has passed on is memory held twice. glibc's own rule moved the
mmap threshold up to the first large body freed, and from then on such bodies came from the
heap and stayed there: a burst of 100 photos of 3.3 MiB left one worker +65 MiB it no longer
used, on top of the main process's queued copies. With a fixed 1 MiB threshold a body that
large is mapped for itself and unmapped when freed (about 850 page faults for 3.3 MiB, small
beside decoding it); a typical photo (100-500 kB) stays on the heap, with no faults.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("gre.malloc_thresholds")

#: ``mallopt`` parameters (glibc's malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: Blocks smaller than this come from the heap: glibc's largest mmap threshold on 64-bit.
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
#: Free memory the heap keeps at its top: twice the mmap threshold, as glibc's own rule.
TRIM_THRESHOLD_BYTES = 2 * MMAP_THRESHOLD_BYTES


#: An HTTP worker's fixed mmap threshold: blocks this large or larger are mapped for
#: themselves and given back when freed.
WORKER_MMAP_THRESHOLD_BYTES = 1024 * 1024


def keep_freed_memory() -> bool:
    """Set this process's malloc thresholds to :data:`MMAP_THRESHOLD_BYTES` and
    :data:`TRIM_THRESHOLD_BYTES` (the main process with workers; see the module docstring).
    Returns whether they were set: ``False`` where the C library is not glibc (nothing
    changes)."""
    return _set_thresholds(
        {M_MMAP_THRESHOLD: MMAP_THRESHOLD_BYTES, M_TRIM_THRESHOLD: TRIM_THRESHOLD_BYTES}
    )


def return_large_bodies() -> bool:
    """Fix this process's mmap threshold at :data:`WORKER_MMAP_THRESHOLD_BYTES` (an HTTP
    worker; see the module docstring), which also stops glibc moving it. Returns whether it
    was set: ``False`` where the C library is not glibc (nothing changes)."""
    return _set_thresholds({M_MMAP_THRESHOLD: WORKER_MMAP_THRESHOLD_BYTES})


def _set_thresholds(values: dict[int, int]) -> bool:
    libc = ctypes.CDLL(None)  # the C library this process already uses
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        log.debug("not glibc: malloc's thresholds left as they are")
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = all([bool(mallopt(param, value)) for param, value in values.items()])
    log.debug("malloc thresholds %s: %s", values, "set" if done else "refused")
    return done
