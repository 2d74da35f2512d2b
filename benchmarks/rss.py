"""Resident memory (VmRSS from /proc) of a running gre: the front end and each replica."""

from __future__ import annotations

import json
import os
from pathlib import Path

from benchmarks.httpclient import Target, fetch

MIB = 1024 * 1024


def rss_bytes(pid: int) -> int | None:
    """``VmRSS`` of process ``pid`` in bytes; ``None`` once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024  # /proc gives kB
    return None


def http_worker_pids(front_end_pid: int) -> list[int]:
    """The HTTP worker processes of the front end ``front_end_pid`` (its children running
    gre.http.worker), sorted; none with ``workers = 1``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:  # it exited meanwhile
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        if parent == front_end_pid and b"gre.http.worker" in cmdline:
            pids.append(int(entry))
    return sorted(pids)


async def service_rss(target: Target, front_end_pid: int) -> dict[str, int | None]:
    """RSS (bytes) of the front end and of every replica ``GET /api/model`` lists now, keyed
    ``"front end"`` and ``"replica NAME"`` (a restarted replica has a new pid: same key)."""
    model = json.loads((await fetch(target.with_path("/api/model"))).body)
    pids = {"front end": front_end_pid}
    pids |= {f"replica {r['name']}": r["pid"] for r in model["replicas"] if r["pid"]}
    return {name: rss_bytes(pid) for name, pid in pids.items()}


def rss_table(samples: list[tuple[str, dict[str, int | None]]]) -> str:
    """Samples as a table in MiB, one row per process, one column per sample."""
    names = list(dict.fromkeys(name for _, sample in samples for name in sample))
    width = max(len(name) for name in names)
    head = " " * width + "".join(f"{label:>12}" for label, _ in samples)
    rows = [head]
    for name in names:
        cells = []
        for _, sample in samples:
            value = sample.get(name)
            cells.append(f"{value / MIB:>12.1f}" if value is not None else f"{'-':>12}")
        rows.append(f"{name:<{width}}" + "".join(cells))
    return "\n".join(rows)
