"""gre's own cost per request, as a ratio to a trivial endpoint's, and its saturation
throughput, as a ratio to the machine's JPEG decode limit: in one run, on this machine.

    python -m benchmarks.overhead [--seconds 10] [--connections 64] [--config FILE]
                                  [--set KEY=VALUE ...] [--only trivial,tiny,cat,decode]
                                  [--json FILE]

Rows (``--only`` picks some):

- ``trivial``: :mod:`benchmarks.trivial_starlette`, a Starlette endpoint on uvicorn (httptools
  + uvloop, access log off) that reads the whole body and answers ``[]``, POSTed the tiny JPEG.
- ``tiny``: ``gre serve --engine null`` (fixed probabilities, no forward pass; access log off
  as for every benchmark, then ``--set``), POSTed a 16x16 JPEG (quality 90, made from
  ``../shared/images/cat.jpg``): what gre costs beyond the stack when decoding is negligible.
- ``cat``: the same gre, POSTed ``../shared/images/cat.jpg`` (480x360, 140 kB).
- ``decode``: the decode limit, ``os.cpu_count()`` processes each decoding ``cat.jpg`` with
  :func:`gre.model.imaging.decode_bgr` back to back for the window: images/s, all cores,
  and CPU µs per image. Flagged when other work took a tenth of the cores or more, with the
  rate the cores would give if free (processes / CPU per image).

How: each server row is a 2 s ``wrk`` warm-up, then one ``wrk -t1 -c64 -d10s -s post.lua URL``
window (a Lua script that POSTs the image with ``Content-Type: image/jpeg``). wrk reports the
requests completed, req/s, non-2xx responses and socket errors; a window with any of those is
flagged in the table, never dropped. CPU per request (µs) is the CPU time (user + system, from
``/proc/PID/stat``, with what each has reaped of children that exited) of the server's whole
process tree (the server and every descendant: gre's replicas) over the window, divided by
the requests completed; wrk's own CPU is not counted, but it shares the cores. The
``replicas`` column is the part of it gre's replica processes spent (decode, squash and crop,
the engine): the rest is the front end's. The ``main`` column is the server process's own
part: with ``workers`` > 1 the main process, which every request passes through (admission,
the queue, the replicas' link), so a core's worth of it bounds the throughput whatever the
number of workers: the table prints that bound for each such row. The ``cat`` row's ratio
is to the same trivial row (16x16 body): it includes reading 140 kB and decoding.
The mean batch size is the delta of gre's ``gre_batch_size`` histogram (``_sum / _count``
from ``/metrics``) over the window; gre's answers by status (``gre_requests_total``) say
which non-2xx a window had.

Issue 13's goals, which this prints beside the figures (it asserts nothing): gre's CPU per
request with the tiny JPEG <= 2x the trivial endpoint's, and gre's saturation throughput
with cat.jpg >= 0.9x the decode limit. Needs Debian's ``wrk``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import cv2

from benchmarks.data import ROOT, shared_path
from benchmarks.servers import GRE_BENCH_SETTINGS, free_port, log_path, serving
from gre.model.imaging import decode_bgr
from gre.testing import running_gre

ROWS = ("trivial", "tiny", "cat", "decode")
#: Issue 13's goals: CPU per request (tiny JPEG) / the trivial endpoint's, at most; and the
#: cat.jpg saturation throughput / the decode limit, at least.
CPU_RATIO_GOAL = 2.0
DECODE_RATIO_GOAL = 0.9
#: The decode limit is flagged as measured on shared cores below this fraction of them busy.
SHARED_CORES = 0.9
#: The tiny JPEG: side (px) and quality.
TINY_SIDE = 16
TINY_QUALITY = 90
#: /proc/PID/stat counts CPU time in clock ticks.
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- wrk ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: ``requests`` completed (any status) in ``duration_s`` seconds,
    ``rps`` (wrk's Requests/sec), ``non_2xx`` (wrk counts statuses >= 400) and
    ``socket_errors`` (connect, read, write and timeout errors together)."""

    requests: int
    duration_s: float
    rps: float
    non_2xx: int
    socket_errors: int


_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_wrk(text: str) -> WrkResult:
    """wrk's standard output -> :class:`WrkResult`.

    Raises:
        ValueError: the text is not wrk's report.
    """
    total = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", text, re.M)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if total is None or rate is None:
        raise ValueError(f"not wrk's report: {text[:300]!r}")
    # Printed only when some occurred.
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    return WrkResult(
        requests=int(total.group(1)),
        duration_s=float(total.group(2)) * _DURATION_UNITS[total.group(3)],
        rps=float(rate.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )


def wrk_path() -> str:
    """The ``wrk`` executable.

    Raises:
        RuntimeError: wrk is not installed (with the apt-get line that installs it).
    """
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is not installed: apt-get install wrk (make setup does)")
    return path


def post_script(image: Path, directory: Path) -> Path:
    """Write a wrk Lua script that POSTs ``image``'s bytes as ``image/jpeg``; returns its
    path (``directory/post-<image name>.lua``)."""
    if "]==]" in str(image):
        raise ValueError(f"{image}: a path wrk's script cannot quote")
    script = directory / f"post-{image.name}.lua"
    script.write_text(
        f'local file = assert(io.open([==[{image}]==], "rb"))\n'
        'wrk.method = "POST"\n'
        'wrk.body = file:read("*a")\n'
        "file:close()\n"
        'wrk.headers["Content-Type"] = "image/jpeg"\n'
    )
    return script


def run_wrk(url: str, script: Path, seconds: int, connections: int) -> WrkResult:
    """``wrk -t1 -cCONNECTIONS -dSECONDSs -s SCRIPT URL`` (wrk takes whole seconds).

    Raises:
        RuntimeError: wrk is missing or failed (its output in the message).
    """
    command = [
        wrk_path(), "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stdout}{done.stderr}")
    return parse_wrk(done.stdout)


# --- CPU of a process tree ---------------------------------------------------------------


@dataclass(frozen=True)
class ProcStat:
    """What one ``/proc/PID/stat`` says: the parent's pid, the start time (clock ticks after
    boot, which tells a reused pid apart) and CPU ticks: user + system, its own and that of
    its children it has reaped (``ticks``), and its own only (``own``)."""

    pid: int
    ppid: int
    start: int
    ticks: int
    own: int = 0


def read_stat(pid: int) -> ProcStat | None:
    """``/proc/PID/stat`` parsed; ``None`` when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # exited (or never was) between the listing and the read
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): ppid is field 4, utime..cstime 14..17, starttime 22.
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    ticks = utime + stime + cutime + cstime
    return ProcStat(pid, int(fields[1]), int(fields[19]), ticks, utime + stime)


def process_tree(root: int) -> dict[tuple[int, int], int]:
    """``root`` and all its descendants now: ``(pid, start) -> CPU ticks``."""
    stats = [s for p in os.listdir("/proc") if p.isdigit() and (s := read_stat(int(p)))]
    children: dict[int, list[ProcStat]] = {}
    for stat in stats:
        children.setdefault(stat.ppid, []).append(stat)
    tree: dict[tuple[int, int], int] = {}
    top = next((s for s in stats if s.pid == root), None)
    pending = [top] if top else []
    while pending:
        stat = pending.pop()
        tree[(stat.pid, stat.start)] = stat.ticks
        pending.extend(children.get(stat.pid, []))
    return tree


#: What a gre replica process's command line holds (gre.replicas.replica spawns it).
REPLICA_MODULE = b"gre.replicas.worker"


def replica_keys(tree: dict[tuple[int, int], int]) -> set[tuple[int, int]]:
    """The entries of ``tree`` that are gre replica processes (by their command line)."""
    keys = set()
    for pid, start in tree:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:  # gone since the sample
            continue
        if REPLICA_MODULE in command:
            keys.add((pid, start))
    return keys


@dataclass(frozen=True)
class TreeCpu:
    """A process tree's CPU between two :func:`process_tree` samples: ``seconds`` (user +
    system), and how many processes were in the tree ``before``, ``after`` and at ``both``."""

    seconds: float
    before: int
    after: int
    both: int


def tree_cpu(before: dict[tuple[int, int], int], after: dict[tuple[int, int], int]) -> TreeCpu:
    """The CPU the tree spent between the samples ``before`` and ``after``.

    Totals rather than per-process deltas: a descendant that exits during the window and is
    reaped by its parent moves its time into the parent's reaped-children ticks, so the
    tree's total keeps it; one born during the window counts whole.
    """
    ticks = sum(after.values()) - sum(before.values())
    return TreeCpu(ticks / CLK_TCK, len(before), len(after), len(before.keys() & after.keys()))


# --- gre's metrics -----------------------------------------------------------------------


def fetch_body(url: str, timeout_s: float = 10.0) -> bytes:
    """GET ``url``'s body (no proxies: the servers are local)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout_s) as response:
        body: bytes = response.read()
        return body


def parse_batch_size(text: str) -> tuple[float, float]:
    """gre's ``/metrics`` text -> the ``gre_batch_size`` histogram's ``(_sum, _count)``
    (images, batches) over all its label sets.

    Raises:
        ValueError: the histogram is not there.
    """
    found: dict[str, float] = {}
    for part in ("sum", "count"):
        values = re.findall(rf"^gre_batch_size_{part}(?:\{{[^}}]*\}})? (\S+)$", text, re.M)
        if not values:
            raise ValueError("gre_batch_size is not in the metrics")
        found[part] = sum(float(v) for v in values)
    return found["sum"], found["count"]


def parse_status_counts(text: str) -> dict[str, float]:
    """gre's ``/metrics`` text -> ``gre_requests_total`` by its ``code`` label (HTTP status)."""
    counts: dict[str, float] = {}
    for labels, value in re.findall(r"^gre_requests_total\{([^}]*)\} (\S+)$", text, re.M):
        code = re.search(r'code="([^"]*)"', labels)
        if code:
            counts[code.group(1)] = counts.get(code.group(1), 0.0) + float(value)
    return counts


@dataclass(frozen=True)
class GreWindow:
    """What gre's ``/metrics`` say of a window: ``mean_batch`` (images per batch; ``None``
    when no batch ran) and ``statuses`` (answers by HTTP status, those that changed)."""

    mean_batch: float | None
    statuses: dict[str, int]


def gre_window(before: str, after: str) -> GreWindow:
    """:class:`GreWindow` from two ``/metrics`` scrapes."""
    (images0, batches0), (images1, batches1) = parse_batch_size(before), parse_batch_size(after)
    mean = (images1 - images0) / (batches1 - batches0) if batches1 > batches0 else None
    old, new = parse_status_counts(before), parse_status_counts(after)
    statuses = {code: round(n - old.get(code, 0.0)) for code, n in sorted(new.items())}
    return GreWindow(mean, {code: n for code, n in statuses.items() if n})


# --- one measured window -----------------------------------------------------------------


@dataclass
class Row:
    """One server's measured window. ``cpu_us_per_request``: the server tree's CPU µs per
    completed request; ``cores``: its CPU seconds per second; ``processes``: in its tree at
    both samples; ``ratio_to_trivial``: ``cpu_us_per_request`` / the trivial endpoint's;
    ``mean_batch``: images per batch and ``statuses``: answers by HTTP status, over the
    window (gre only)."""

    name: str
    label: str
    requests: int
    duration_s: float
    rps: float
    non_2xx: int
    socket_errors: int
    cpu_s: float
    cpu_us_per_request: float
    cores: float
    processes: int
    #: Of ``cpu_us_per_request``, what gre's replica processes spent (decode, preprocess,
    #: the engine); the rest is the front end's (HTTP, batching, the trips to the replicas).
    replica_us_per_request: float | None = None
    #: Of ``cpu_us_per_request``, what the server process itself spent: the front end with
    #: one HTTP worker; with more, the main process every request passes through, so one
    #: core's worth of it bounds the throughput however many workers parse.
    main_us_per_request: float | None = None
    mean_batch: float | None = None
    statuses: dict[str, int] | None = None
    ratio_to_trivial: float | None = None


def measure(
    name: str, label: str, url: str, pid: int, script: Path, *, seconds: int, connections: int,
    warmup: int, metrics_url: str | None = None,
) -> Row:  # fmt: skip
    """A ``warmup``-second wrk run, then a measured ``seconds`` one against ``url``, with the
    CPU of ``pid``'s process tree (and, given ``metrics_url``, gre's :class:`GreWindow`)
    around it."""
    run_wrk(url, script, warmup, connections)
    # Metrics outside the CPU samples: scraping costs the server CPU too.
    scraped = fetch_body(metrics_url).decode() if metrics_url else None
    before, root_before = process_tree(pid), read_stat(pid)
    replicas_before = replica_keys(before)
    result = run_wrk(url, script, seconds, connections)
    after, root_after = process_tree(pid), read_stat(pid)
    main_s = (
        (root_after.own - root_before.own) / CLK_TCK
        if root_before and root_after and root_before.start == root_after.start
        else None
    )
    cpu = tree_cpu(before, after)
    replicas = replica_keys(after) & replicas_before  # the same replicas all the window
    replica_s = sum(after[k] - before[k] for k in replicas) / CLK_TCK if replicas else None
    window = (
        gre_window(scraped, fetch_body(metrics_url).decode()) if metrics_url and scraped else None
    )
    return Row(
        name=name, label=label, requests=result.requests, duration_s=result.duration_s,
        rps=result.rps, non_2xx=result.non_2xx, socket_errors=result.socket_errors,
        cpu_s=cpu.seconds, cpu_us_per_request=cpu.seconds / max(result.requests, 1) * 1e6,
        cores=cpu.seconds / result.duration_s, processes=cpu.both,
        replica_us_per_request=(
            replica_s / max(result.requests, 1) * 1e6 if replica_s is not None else None
        ),
        main_us_per_request=(
            main_s / max(result.requests, 1) * 1e6 if main_s is not None else None
        ),
        mean_batch=window.mean_batch if window else None,
        statuses=window.statuses if window else None,
    )  # fmt: skip


# --- the decode limit --------------------------------------------------------------------


def _decode_worker(image: bytes, seconds: float, start: Barrier, results: Any) -> None:
    """Decode ``image`` back to back for ``seconds`` once every worker is ready; put
    ``(images, elapsed s, CPU s)`` on ``results``."""
    decode_bgr(image)  # warm: the first decode pays for OpenCV's set-up
    start.wait()
    count, begin, cpu = 0, time.perf_counter(), time.process_time()
    end = begin + seconds
    while time.perf_counter() < end:
        decode_bgr(image)
        count += 1
    results.put((count, time.perf_counter() - begin, time.process_time() - cpu))


@dataclass(frozen=True)
class DecodeLimit:
    """The decode limit's figures: ``images_per_s`` all processes together, the CPU µs each
    image took (``cpu_us_per_image``), and the cores they kept busy (``cores``: below
    ``processes`` when other work shared the machine, which lowers ``images_per_s``)."""

    images_per_s: float
    cpu_us_per_image: float
    cores: float
    processes: int

    @property
    def shared(self) -> bool:
        """Whether other work took a tenth or more of the cores: the rate is then low."""
        return self.cores < SHARED_CORES * self.processes


def decode_limit(image: bytes, seconds: float, processes: int | None = None) -> DecodeLimit:
    """What ``processes`` (default ``os.cpu_count()``) processes decode together, each
    running :func:`decode_bgr` on ``image`` back to back for ``seconds``."""
    count = processes or os.cpu_count() or 1
    context = get_context("spawn")  # a fresh interpreter: no state (or threads) from here
    start = context.Barrier(count + 1)
    results = context.Queue()
    workers = [
        context.Process(target=_decode_worker, args=(image, seconds, start, results))
        for _ in range(count)
    ]
    for worker in workers:
        worker.start()
    try:
        start.wait(timeout=120)  # all decoding at once, so that they share the cores
        figures = [results.get(timeout=seconds + 120) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
                worker.join()
    images = sum(n for n, _, _ in figures)
    cpu = sum(c for _, _, c in figures)
    return DecodeLimit(
        images_per_s=float(sum(n / elapsed for n, elapsed, _ in figures)),
        cpu_us_per_image=cpu / max(images, 1) * 1e6,
        cores=sum(c / elapsed for _, elapsed, c in figures),
        processes=count,
    )


# --- the run -----------------------------------------------------------------------------


def tiny_jpeg(source: Path) -> bytes:
    """``source`` resized to TINY_SIDE x TINY_SIDE and JPEG-encoded at TINY_QUALITY."""
    image = cv2.imread(str(source), cv2.IMREAD_COLOR)
    if image is None:
        raise RuntimeError(f"OpenCV cannot read {source}")
    small = cv2.resize(image, (TINY_SIDE, TINY_SIDE), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, TINY_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode the tiny JPEG")
    return encoded.tobytes()


@contextmanager
def trivial_server() -> Iterator[tuple[str, int]]:
    """:mod:`benchmarks.trivial_starlette` on a free port; yields its URL and pid."""
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.trivial_starlette", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    with serving(command, base + "/", log_path("trivial-starlette", port), timeout_s=30) as p:
        yield f"{base}/api/classify", p.pid


def parse_only(text: str) -> tuple[str, ...]:
    """``--only``'s comma-separated rows, in :data:`ROWS` order (see :func:`pick_rows`)."""
    return pick_rows(text, ROWS)


def pick_rows(text: str, rows: Sequence[str]) -> tuple[str, ...]:
    """Comma-separated row names -> those of ``rows`` named, in ``rows``' order.

    Raises:
        argparse.ArgumentTypeError: an unknown row, or none.
    """
    names = {name.strip() for name in text.split(",") if name.strip()}
    unknown = names - set(rows)
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown rows {', '.join(sorted(unknown)) or '(none)'}: pick from {', '.join(rows)}"
        )
    return tuple(name for name in rows if name in names)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _notes(row: Row) -> str:
    """What went wrong in ``row``'s window (``ok`` when nothing)."""
    notes = []
    if row.non_2xx:
        notes.append(f"{row.non_2xx} non-2xx")
        if row.statuses:  # gre's own count says which
            notes.append(" ".join(f"{c}: {n}" for c, n in row.statuses.items() if c != "200"))
    if row.socket_errors:
        notes.append(f"{row.socket_errors} socket errors")
    return ", ".join(notes) or "ok"


def table(rows: Sequence[Row], decode: DecodeLimit | None) -> str:
    """The printed table: one line per row, then the decode limit and the goals' ratios
    (marked when a window they rest on had errors)."""
    lines = [
        f"{'row':<30} {'requests':>8} {'req/s':>8} {'CPU µs/req':>10} {'replicas':>8} "
        f"{'main':>7} {'x trivial':>9} {'mean batch':>10} {'cores':>5} {'procs':>5}  notes"
    ]
    for row in rows:
        lines.append(
            f"{row.label:<30} {row.requests:>8} {row.rps:>8.1f} {row.cpu_us_per_request:>10.1f} "
            f"{_fmt(row.replica_us_per_request, '.1f'):>8} "
            f"{_fmt(row.main_us_per_request, '.1f'):>7} "
            f"{_fmt(row.ratio_to_trivial, '.2f'):>9} {_fmt(row.mean_batch, '.2f'):>10} "
            f"{row.cores:>5.2f} {row.processes:>5}  {_notes(row)}"
        )
    if decode is not None:
        label = f"decode limit ({decode.processes} processes)"
        note = "images/s: cat.jpg, decode_bgr"
        if decode.shared:
            note += (
                f"; shared cores: {decode.processes / decode.cpu_us_per_image * 1e6:.0f}/s if free"
            )
        lines.append(
            f"{label:<30} {'':>8} {decode.images_per_s:>8.1f} {decode.cpu_us_per_image:>10.1f} "
            f"{'-':>8} {'-':>7} {'-':>9} {'-':>10} {decode.cores:>5.2f} {decode.processes:>5}  "
            f"{note}"
        )
    by_name = {row.name: row for row in rows}
    trivial = by_name.get("trivial")

    def caveat(*used: Row | None) -> str:
        return "" if all(r is None or _notes(r) == "ok" for r in used) else "  [errors: see notes]"

    for row in rows:
        kind, _, workers = row.name.partition("-w")
        who = f"gre w{workers or 1}"
        if kind == "tiny" and row.ratio_to_trivial is not None:
            lines.append(
                f"{who} CPU/request (16x16) / trivial's: {row.ratio_to_trivial:.2f}   "
                f"(goal <= {CPU_RATIO_GOAL:.1f}){caveat(row, trivial)}"
            )
        if kind == "cat" and decode:
            lines.append(
                f"{who} req/s (cat.jpg) / decode limit: {row.rps / decode.images_per_s:.2f}   "
                f"(goal >= {DECODE_RATIO_GOAL:.1f}){caveat(row)}"
                + ("  [decode limit on shared cores]" if decode.shared else "")
            )
        one = by_name.get(kind) if workers else None
        if one is not None and one.rps > 0:
            lines.append(f"{who} req/s / w1's ({kind}): {row.rps / one.rps:.2f}")
        if workers and row.main_us_per_request:
            lines.append(
                f"{who} main process ({kind}): {row.main_us_per_request:.1f} µs/req, "
                f"one core's worth: {1e6 / row.main_us_per_request:.0f} req/s at most"
            )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.overhead", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seconds", type=int, default=10, help="measured window per row, s")
    parser.add_argument("--warmup", type=int, default=2, help="wrk warm-up before each, s")
    parser.add_argument("--connections", type=int, default=64, help="wrk's -c")
    parser.add_argument("--config", type=Path, help="gre's config (default: the embedded one)")
    parser.add_argument(
        "--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
        help="gre setting, after access_log=false (repeatable)",
    )  # fmt: skip
    parser.add_argument("--only", type=parse_only, default=ROWS, help=",".join(ROWS))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--workers", type=parse_workers, default=default_workers(),
        help="gre's server.workers to measure, comma-separated (default: 1 and the core count)",
    )  # fmt: skip
    return parser.parse_args(argv)


def default_workers() -> list[int]:
    """1, and one HTTP worker per core when there is more than one core."""
    cores = os.cpu_count() or 1
    return [1, cores] if cores > 1 else [1]


def parse_workers(value: str) -> list[int]:
    """``"1,2"`` -> ``[1, 2]``; raises ``argparse.ArgumentTypeError`` otherwise."""
    try:
        counts = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: comma-separated worker counts >= 1")
    return counts


def row_name(kind: str, workers: int) -> str:
    """``"tiny"`` with one worker, ``"tiny-w2"`` with two."""
    return kind if workers == 1 else f"{kind}-w{workers}"


def gre_rows(
    args: argparse.Namespace, scripts: dict[str, Path], window: dict[str, int], workers: int = 1
) -> tuple[list[Row], dict[str, Any]]:
    """The ``tiny`` and ``cat`` rows asked for, from one ``gre serve --engine null`` with
    ``workers`` HTTP workers; returns them and what gre says of its replicas and batching."""
    settings = [*GRE_BENCH_SETTINGS, f"workers={workers}", *args.settings]
    flags = [x for s in settings for x in ("--set", s)]
    if args.config:
        flags += ["--config", str(args.config)]
    port = free_port()
    log = log_path("gre-overhead", port)
    rows = []
    with running_gre("--engine", "null", *flags, port=port, log=log, cwd=ROOT) as gre:
        model = json.loads(fetch_body(f"{gre.url}/api/model"))
        info = {
            "replicas": len(model["replicas"]), "devices": model["devices"],
            "batching": model["batching"],
        }  # fmt: skip
        print(
            f"gre --engine null: {info['replicas']} replica(s) on {model['devices']}, "
            f"max_batch_size {model['batching']['max_batch_size']}",
            flush=True,
        )
        for name, label in (("tiny", "16x16 JPEG"), ("cat", "cat.jpg")):
            if name in args.only:
                label = f"gre null, w{workers}, {label}"
                rows.append(
                    measure(row_name(name, workers), label, f"{gre.url}/api/classify",
                            gre.process.pid, scripts[name], metrics_url=f"{gre.url}/metrics",
                            **window)
                )  # fmt: skip
    return rows, info


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the rows asked for, print the table; returns the figures (as ``--json`` writes)."""
    args = parse_args(argv)
    if set(args.only) - {"decode"} and shutil.which("wrk") is None:
        sys.exit("benchmarks.overhead needs `wrk`: apt-get install wrk (make setup does)")
    cat = shared_path("images/cat.jpg")
    rows: list[Row] = []
    gre_info: dict[str, Any] = {}
    window = {"seconds": args.seconds, "connections": args.connections, "warmup": args.warmup}
    with tempfile.TemporaryDirectory(prefix="gre-overhead-") as scratch:
        directory = Path(scratch)
        tiny = directory / "tiny.jpg"
        tiny.write_bytes(tiny_jpeg(cat))
        scripts = {"tiny": post_script(tiny, directory), "cat": post_script(cat, directory)}
        print(
            f"wrk -t1 -c{args.connections} -d{args.seconds}s after a {args.warmup} s warm-up; "
            f"tiny JPEG {TINY_SIDE}x{TINY_SIDE}, {tiny.stat().st_size} bytes; cat.jpg "
            f"{cat.stat().st_size} bytes; {os.cpu_count()} CPUs",
            flush=True,
        )
        if "trivial" in args.only:
            with trivial_server() as (url, pid):
                label = "trivial Starlette (16x16 body)"
                rows.append(measure("trivial", label, url, pid, scripts["tiny"], **window))
        if {"tiny", "cat"} & set(args.only):
            for workers in args.workers:
                more, info = gre_rows(args, scripts, window, workers)
                rows += more
                gre_info = gre_info or info
    by_name = {row.name: row for row in rows}
    trivial = by_name.get("trivial")
    for row in rows:
        if trivial is not None and row is not trivial and trivial.cpu_us_per_request > 0:
            row.ratio_to_trivial = row.cpu_us_per_request / trivial.cpu_us_per_request
    processes = os.cpu_count() or 1
    decode = None
    if "decode" in args.only:
        decode = decode_limit(cat.read_bytes(), args.seconds, processes)
    print(table(rows, decode), flush=True)
    tiny_row, cat_row = by_name.get("tiny"), by_name.get("cat")
    figures: dict[str, Any] = {
        "window": window,
        "cpus": processes,
        "gre": gre_info,
        "settings": [*GRE_BENCH_SETTINGS, *args.settings],
        "rows": {row.name: asdict(row) for row in rows},
        "decode_limit": asdict(decode) if decode else None,
        "cpu_ratio_tiny_to_trivial": tiny_row.ratio_to_trivial if tiny_row else None,
        "rps_ratio_cat_to_decode_limit": (
            cat_row.rps / decode.images_per_s if cat_row and decode else None
        ),
        "goals": {"cpu_ratio_max": CPU_RATIO_GOAL, "decode_ratio_min": DECODE_RATIO_GOAL},
    }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
