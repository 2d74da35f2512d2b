"""glibc malloc's thresholds for the main process (gre.malloc_thresholds): a batch of photo
bodies allocated and freed again and again touches fresh pages each time by default, and
none once the thresholds are set. Each case runs in a process of its own: the thresholds
are the whole process's."""

from __future__ import annotations

import subprocess
import sys
import textwrap

#: 40 batches of 32 bodies of 140 kB (cat.jpg's size), each freed whole; prints the minor
#: page faults they took, after one batch to warm up.
CHURN = textwrap.dedent(
    """
    import resource, sys
    from gre.malloc_thresholds import keep_freed_memory
    if sys.argv[1] == "set":
        assert keep_freed_memory(), "glibc refused the thresholds"
    def batch():
        bodies = [b"x" * 140_000 for _ in range(32)]
        del bodies
    batch()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(40):
        batch()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


def test_freed_bodies_are_kept_for_the_next_batch() -> None:
    by_default, kept = faults("default"), faults("set")
    # 40 batches of 32 x 35 pages: glibc's default gives most of them back and faults them in
    # again; with the thresholds the heap keeps them.
    assert by_default > 40 * 32 * 10, by_default
    assert kept < by_default / 100, (kept, by_default)
