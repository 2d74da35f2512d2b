"""glibc malloc's thresholds, set for a process that turns photos' bodies over by the batch.

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


def keep_freed_memory() -> bool:
    """Set this process's malloc thresholds to :data:`MMAP_THRESHOLD_BYTES` and
    :data:`TRIM_THRESHOLD_BYTES` (see the module docstring). Returns whether they were set:
    ``False`` where the C library is not glibc (nothing changes)."""
    libc = ctypes.CDLL(None)  # the C library this process already uses
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        log.debug("not glibc: malloc's thresholds left as they are")
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
    log.debug("malloc thresholds: mmap %d, trim %d bytes: %s", MMAP_THRESHOLD_BYTES,
              TRIM_THRESHOLD_BYTES, "set" if done else "refused")  # fmt: skip
    return done
