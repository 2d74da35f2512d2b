"""Instructions per request of gre's front end and of a trivial endpoint, counted by
Valgrind's callgrind: a measure of the front end's own cost that this machine's noise leaves
alone.

    python -m benchmarks.instructions [--seconds 10] [--warmup 3] [--connections 64]
                                      [--only trivial,tiny] [--json FILE]

CPU time per request (:mod:`benchmarks.overhead`) moves by 10-30 % from run to run on a
shared 2-core VM, so a change worth 3 % cannot be told from noise. The instructions a process
executes per request move by about 1 %: a change to the front end shows as what it is.

Rows (``--only`` picks some):

- ``trivial``: :mod:`benchmarks.trivial_starlette` (Starlette on uvicorn, httptools + uvloop,
  access log off), POSTed the tiny JPEG.
- ``tiny``: ``gre serve --engine null`` with one HTTP worker (``workers=1``, access log off),
  POSTed the tiny JPEG (16x16, as :mod:`benchmarks.overhead`'s): the front end's
  instructions only. Its replica runs natively, uncounted (``--trace-children=no``): the
  replica's cost per image is :mod:`benchmarks.preprocess`'s.
- ``cat``: the same, POSTed cat.jpg (140 kB): what a photo's bytes cost the front end.
- ``w2``: the same with ``workers=2``, POSTed the tiny JPEG: two rows, the main process's
  instructions per request and the HTTP workers' together (``--trace-children=yes``, the
  replica skipped by ``--trace-children-skip-by-arg``). With workers, the main process runs
  the application for every request, so its row bounds how far more workers can scale.

How: each server runs under ``valgrind --tool=callgrind --instr-atstart=no`` (counting off
while it starts); after a ``wrk`` warm-up, ``callgrind_control`` turns counting on and zeroes
it, ``wrk -t1 -cCONNECTIONS -dSECONDSs`` runs, and a dump is taken: its ``summary`` line (Ir,
instructions executed) over the requests wrk completed. Valgrind slows a process some 20-50
times, so the counted server serves a few hundred requests a second; gre's batches stay full
(64 connections, batches of up to 32), as they are at full speed.

Instructions are not time: a system call counts as its user-space instructions only, and a
cache miss counts nothing. Compare versions of the front end with this; judge issue 13's goal
(CPU per request) with :mod:`benchmarks.overhead`. Needs Debian's ``valgrind`` and ``wrk``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.data import ROOT, shared_path
from benchmarks.overhead import (
    fetch_body,
    gre_window,
    pick_rows,
    post_script,
    run_wrk,
    tiny_jpeg,
)
from benchmarks.servers import GRE_BENCH_SETTINGS, free_port, gre_flags, log_path
from gre.testing import running

ROWS = ("trivial", "tiny", "cat", "w2")
#: The argument that names a replica process, which a counted ``w2`` row runs natively.
REPLICA_ARG = "*gre.replicas.worker*"
#: The counted servers run without coverage.py, which ``make test`` starts in every Python
#: subprocess (``COVERAGE_PROCESS_CONFIG``): its tracer's instructions are not the server's
#: (under it the trivial endpoint counted 982,811 a request, not ~221,000), and it slowed the
#: w2 row's processes until a 2 s window saw one request. ``env`` execs, so the pid is kept.
UNCOVERED = ("env", "-u", "COVERAGE_PROCESS_CONFIG", "-u", "COVERAGE_PROCESS_START")
#: How long a server under Valgrind may take to be ready, s (gre: ~10 s here).
START_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Count:
    """One row: ``instructions`` (Ir) the server process executed over a window in which
    wrk completed ``requests``; ``per_request`` is their quotient, and ``ratio_to_trivial``
    that over the trivial endpoint's (``None`` for the trivial row, or without it);
    ``mean_batch``: gre's images per batch over the window (per-batch work is shared by
    fewer requests when batches are smaller), ``None`` for the trivial endpoint."""

    name: str
    label: str
    requests: int
    instructions: int
    per_request: float
    mean_batch: float | None = None
    ratio_to_trivial: float | None = None


def parse_summary(text: str) -> int:
    """A callgrind dump's text -> its ``summary:`` (or ``totals:``) Ir count.

    Raises:
        ValueError: the text has neither line.
    """
    found = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
    if found is None:
        raise ValueError("not a callgrind dump: no summary line")
    return int(found.group(1))


def newest_dump(directory: Path, pid: int) -> Path:
    """The latest of ``pid``'s numbered callgrind dumps in ``directory``
    (``callgrind.PID.N``, N counting up from 1).

    Raises:
        FileNotFoundError: there is none.
    """
    dumps = [
        (int(suffix), path)
        for path in directory.glob(f"callgrind.{pid}.*")
        if (suffix := path.name.rpartition(".")[2]).isdigit()
    ]
    if not dumps:
        raise FileNotFoundError(f"no callgrind dump of pid {pid} in {directory}")
    return max(dumps)[1]


def valgrind_command(command: Sequence[str], directory: Path, children: bool = False) -> list[str]:
    """``command`` under callgrind, counting off, dumps in ``directory``; with ``children``,
    its child processes too, but for gre's replicas (:data:`REPLICA_ARG`); without coverage
    (:data:`UNCOVERED`)."""
    trace = (
        ["--trace-children=yes", f"--trace-children-skip-by-arg={REPLICA_ARG}"]
        if children
        else ["--trace-children=no"]
    )
    return [
        *UNCOVERED, "valgrind", "--tool=callgrind", "--instr-atstart=no", *trace,
        f"--callgrind-out-file={directory}/callgrind.%p", *command,
    ]  # fmt: skip


def http_workers(pid: int, proc: Path = Path("/proc")) -> list[int]:
    """The pids of gre's HTTP worker processes among ``pid``'s children, from ``proc``."""
    children = (proc / str(pid) / "task" / str(pid) / "children").read_text().split()
    return [
        int(child)
        for child in children
        if b"gre.http.worker" in (proc / child / "cmdline").read_bytes()
    ]


def control(pid: int, *flags: str) -> None:
    """``callgrind_control FLAGS PID``.

    Raises:
        RuntimeError: it failed (its output in the message).
    """
    done = subprocess.run(
        ["callgrind_control", *flags, str(pid)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"callgrind_control {' '.join(flags)} {pid}: {done.stdout}{done.stderr}")


def count_window(
    url: str, pids: Sequence[int], script: Path, directory: Path, *,
    seconds: int, warmup: int, connections: int, metrics_url: str | None = None,
) -> tuple[int, list[int], float | None]:  # fmt: skip
    """Warm ``url`` up with wrk, then count each of ``pids``' instructions over one measured
    window: the requests wrk completed, the instructions of each pid, and (given gre's
    ``metrics_url``) the mean batch size, scraped outside the count."""
    run_wrk(url, script, warmup, connections)
    scraped = fetch_body(metrics_url).decode() if metrics_url else None
    for pid in pids:
        control(pid, "--instr=on")
        control(pid, "--zero")
    result = run_wrk(url, script, seconds, connections)
    for pid in pids:
        control(pid, "--dump")
        control(pid, "--instr=off")
    instructions = [parse_summary(newest_dump(directory, pid).read_text()) for pid in pids]
    window = (
        gre_window(scraped, fetch_body(metrics_url).decode()) if metrics_url and scraped else None
    )
    return result.requests, instructions, window.mean_batch if window else None


def count(
    name: str, label: str, url: str, pid: int, script: Path, directory: Path, *,
    seconds: int, warmup: int, connections: int, metrics_url: str | None = None,
) -> Count:  # fmt: skip
    """:func:`count_window` of one process, as a row."""
    requests, (instructions,), batch = count_window(
        url, [pid], script, directory, seconds=seconds, warmup=warmup,
        connections=connections, metrics_url=metrics_url,
    )  # fmt: skip
    return Count(name, label, requests, instructions, instructions / max(requests, 1), batch)


@contextmanager
def counted(
    command: Sequence[str], ready: str, name: str, port: int, directory: Path,
    children: bool = False,
) -> Iterator[subprocess.Popen[bytes]]:  # fmt: skip
    """``command`` (listening on ``port``) under callgrind (its children too, as
    :func:`valgrind_command`) until ``ready`` answers 200; stopped on exit (its log:
    :func:`benchmarks.servers.log_path`)."""
    log = log_path(f"{name}-callgrind", port)
    with running(
        valgrind_command(command, directory, children), log=log, ready=ready, cwd=ROOT,
        timeout_s=START_TIMEOUT_S, name=f"{name} under valgrind",
    ) as process:  # fmt: skip
        yield process


def count_workers(script: Path, directory: Path, window: dict[str, int]) -> list[Count]:
    """The ``w2`` rows: gre with ``workers=2`` and its two HTTP workers counted over one
    window, the main process's instructions per request and the workers' summed.

    Raises:
        RuntimeError: the server does not run two HTTP workers.
    """
    port = free_port()
    flags = gre_flags("null", settings=[*GRE_BENCH_SETTINGS, "workers=2"])
    command = [sys.executable, "-m", "gre", "serve", "--port", str(port), *flags]
    base = f"http://127.0.0.1:{port}"
    with counted(command, f"{base}/readyz", "gre-w2", port, directory, children=True) as gre:
        workers = http_workers(gre.pid)
        if len(workers) != 2:
            raise RuntimeError(f"gre with workers=2 runs {len(workers)} HTTP workers")
        requests, (main_ir, *workers_ir), batch = count_window(
            f"{base}/api/classify", [gre.pid, *workers], script, directory, **window,
            metrics_url=f"{base}/metrics",
        )  # fmt: skip
    per = max(requests, 1)
    both = sum(workers_ir)
    return [
        Count("w2-main", "gre null w2, main process, 16x16", requests, main_ir, main_ir / per,
              batch),
        Count("w2-workers", "gre null w2, 2 HTTP workers, 16x16", requests, both, both / per,
              batch),
    ]  # fmt: skip


def parse_only(text: str) -> tuple[str, ...]:
    """``--only``'s comma-separated rows, in :data:`ROWS` order (see
    :func:`benchmarks.overhead.pick_rows`)."""
    return pick_rows(text, ROWS)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.instructions", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seconds", type=int, default=10, help="counted window per row, s")
    parser.add_argument("--warmup", type=int, default=3, help="wrk warm-up before each, s")
    parser.add_argument("--connections", type=int, default=64, help="wrk's -c")
    parser.add_argument("--only", type=parse_only, default=ROWS, help=",".join(ROWS))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


def table(rows: Sequence[Count]) -> str:
    """The printed table: requests, instructions per request and the ratio, one row each."""
    lines = [f"{'row':<34} {'requests':>8} {'Ir/request':>11} {'x trivial':>9} {'mean batch':>10}"]
    for row in rows:
        ratio = "-" if row.ratio_to_trivial is None else f"{row.ratio_to_trivial:.2f}"
        batch = "-" if row.mean_batch is None else f"{row.mean_batch:.1f}"
        lines.append(
            f"{row.label:<34} {row.requests:>8} {row.per_request:>11,.0f} {ratio:>9} {batch:>10}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Count the rows asked for and print the table; returns the figures."""
    args = parse_args(argv)
    missing = [tool for tool in ("valgrind", "callgrind_control", "wrk") if not shutil.which(tool)]
    if missing:
        sys.exit(
            f"benchmarks.instructions needs {', '.join(missing)}: apt-get install valgrind wrk "
            "(make setup does)"
        )
    window = {"seconds": args.seconds, "warmup": args.warmup, "connections": args.connections}
    rows: list[Count] = []
    with tempfile.TemporaryDirectory(prefix="gre-instructions-") as scratch:
        directory = Path(scratch)
        tiny = directory / "tiny.jpg"
        tiny.write_bytes(tiny_jpeg(shared_path("images/cat.jpg")))
        script = post_script(tiny, directory)
        if "trivial" in args.only:
            port = free_port()
            command = [sys.executable, "-m", "benchmarks.trivial_starlette", "--port", str(port)]
            base = f"http://127.0.0.1:{port}"
            with counted(command, f"{base}/", "trivial", port, directory) as process:
                label = "trivial Starlette (16x16 body)"
                url = f"{base}/api/classify"
                rows.append(count("trivial", label, url, process.pid, script, directory, **window))
        for name in ("tiny", "cat"):
            if name in args.only:
                image = tiny if name == "tiny" else shared_path("images/cat.jpg")
                what = "16x16 JPEG" if name == "tiny" else "cat.jpg"
                port = free_port()
                flags = gre_flags("null", settings=[*GRE_BENCH_SETTINGS, "workers=1"])
                command = [sys.executable, "-m", "gre", "serve", "--port", str(port), *flags]
                base = f"http://127.0.0.1:{port}"
                with counted(command, f"{base}/readyz", f"gre-{name}", port, directory) as gre:
                    rows.append(
                        count(name, f"gre null front end, w1, {what}", f"{base}/api/classify",
                              gre.pid, post_script(image, directory), directory, **window,
                              metrics_url=f"{base}/metrics")
                    )  # fmt: skip
        if "w2" in args.only:
            rows += count_workers(script, directory, window)
    trivial = next((row for row in rows if row.name == "trivial"), None)
    if trivial is not None and trivial.per_request > 0:
        per = trivial.per_request
        rows = [
            r if r is trivial else replace(r, ratio_to_trivial=r.per_request / per) for r in rows
        ]
    print(f"callgrind, wrk -t1 -c{args.connections} -d{args.seconds}s after {args.warmup} s")
    print(table(rows), flush=True)
    figures = {"window": window, "rows": {row.name: asdict(row) for row in rows}}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
