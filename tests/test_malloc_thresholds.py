"""glibc malloc's thresholds (gre.malloc_thresholds). The main process: a batch of photo
bodies allocated and freed again and again touches fresh pages each time by default, and
none once the thresholds are set. An HTTP worker: the large bodies it has passed on stay in
its heap by default, and go back to the kernel with its threshold. Each case runs in a
process of its own: the thresholds are the whole process's."""

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


def printed(script: str, mode: str) -> int:
    """The number ``script`` prints, run in a fresh interpreter with ``mode`` as argv[1]."""
    done = subprocess.run(
        [sys.executable, "-c", script, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


def test_freed_bodies_are_kept_for_the_next_batch() -> None:
    by_default, kept = printed(CHURN, "default"), printed(CHURN, "set")
    # 40 batches of 32 x 35 pages: glibc's default gives most of them back and faults them in
    # again; with the thresholds the heap keeps them.
    assert by_default > 40 * 32 * 10, by_default
    assert kept < by_default / 100, (kept, by_default)


#: A worker's burst: 30 bodies of 3.3 MiB received side by side (each between small objects
#: that outlive it, as other requests' pieces do), then passed on; prints how much of them the
#: process still holds, kB of VmRSS.
BURST = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from gre.malloc_thresholds import return_large_bodies
    if sys.argv[1] == "set":
        assert return_large_bodies(), "glibc refused the threshold"
    def rss_kb():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    warm = b"x" * 3_460_000  # the first large block freed moves glibc's own threshold up
    del warm
    before = rss_kb()
    bodies, pieces = [], []
    for _ in range(30):
        bodies.append(b"x" * 3_460_000)
        pieces.append(b"y" * 200_000)
    del bodies
    print(rss_kb() - before)
    """
)


def test_a_worker_gives_back_the_large_bodies_it_has_passed_on() -> None:
    by_default, returned = printed(BURST, "default"), printed(BURST, "set")
    # 30 x 3.3 MiB is 101 MiB: by default the heap keeps them between the pieces (its top
    # cannot shrink past them); with the fixed threshold each was mapped for itself.
    assert by_default > 80 * 1024, by_default
    assert returned < 10 * 1024, (returned, by_default)
