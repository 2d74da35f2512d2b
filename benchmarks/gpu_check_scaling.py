"""The ``scaling`` section of benchmarks/gpu_check.py: issue 13's goal 2 on a machine with
more cores than this project's 2-core VM. benchmarks.overhead's rows, one ``gre serve
--engine null`` per HTTP worker count (:func:`worker_counts`), each with the 16x16 JPEG and
cat.jpg under ``wrk -t1 -c64``, its one replica on the CPU (``devices=cpu``: the null engine
does no arithmetic, so the replica's work is a GPU replica's, decoding): req/s, CPU µs per
request of the whole tree, the replicas' and the main process's part, the mean batch size;
then the decode limit (every core decoding cat.jpg) and, for each count, req/s over one
worker's and cat.jpg's req/s over the decode limit. Figures are saved after each server, so a
section stopped at its budget keeps what it measured."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from benchmarks import overhead
from benchmarks.data import shared_path
from benchmarks.gpu_check_context import Context
from benchmarks.gpu_check_runner import Budget, Figures, Partial, Skip

#: HTTP worker counts to try, the largest at most three quarters of the cores (the replica's
#: decode threads and wrk need the rest), and at least 2.
COUNTS = (1, 2, 4, 8, 12, 16, 24, 32)
#: Seconds one ``gre serve`` takes besides its two windows: start, model load, shutdown.
SERVER_S = 10.0
#: wrk's warm-up before each window, s.
WARMUP_S = 2


def worker_counts(cores: int) -> list[int]:
    """The worker counts measured on ``cores`` cores: 1, 2, 4, 8, 12 on 16 cores; 1, 2 on 2."""
    most = max(cores * 3 // 4, 2)
    return [n for n in COUNTS if n <= most]


def scaling(ctx: Context, budget: Budget, out: Figures) -> None:
    """The rows of benchmarks.overhead for each of :func:`worker_counts`, then the decode
    limit; the largest counts are left out when the budget would not hold them.

    Raises:
        Skip: no ``wrk`` on PATH.
        Partial: worker counts left out for the budget.
    """
    if shutil.which("wrk") is None:
        raise Skip("wrk is not installed: apt-get install wrk, or bundle it (--prepare)")
    seconds = max(1, round(ctx.sizes.scaling_s))
    warmup = WARMUP_S
    # The null engine has no GPU: on a GPU machine devices=all would refuse to plan it.
    flags = ["--seconds", str(seconds), "--warmup", str(warmup), "--set", "devices=cpu"]
    args = overhead.parse_args(flags)
    window = {"seconds": seconds, "connections": args.connections, "warmup": warmup}
    cores = os.cpu_count() or 1
    counts = worker_counts(cores)
    out.set("cores", cores)
    out.set("window", window)
    cat = shared_path("images/cat.jpg")
    rows: list[overhead.Row] = []
    left_out: list[int] = []
    with tempfile.TemporaryDirectory(prefix="gre-scaling-") as scratch:
        directory = Path(scratch)
        tiny = directory / "tiny.jpg"
        tiny.write_bytes(overhead.tiny_jpeg(cat))
        scripts = {
            "tiny": overhead.post_script(tiny, directory),
            "cat": overhead.post_script(cat, directory),
        }
        with overhead.trivial_server() as (url, pid):
            label = "trivial Starlette (16x16 body)"
            rows.append(overhead.measure("trivial", label, url, pid, scripts["tiny"], **window))
        per_server = 2 * (seconds + warmup) + SERVER_S
        for workers in counts:
            if not budget.allows(per_server + seconds + 5):  # + the decode limit
                left_out.append(workers)
                continue
            more, info = overhead.gre_rows(args, scripts, window, workers)
            rows += more
            out.set("gre", info)
            out.set("rows", {row.name: asdict(row) for row in rows})
    trivial = rows[0]
    for row in rows[1:]:
        row.ratio_to_trivial = row.cpu_us_per_request / max(trivial.cpu_us_per_request, 1e-9)
    out.set("rows", {row.name: asdict(row) for row in rows})
    decode = overhead.decode_limit(cat.read_bytes(), seconds, cores)
    out.set("decode_limit", asdict(decode))
    print(overhead.table(rows, decode), flush=True)
    by_name = {row.name: row for row in rows}
    curve: dict[str, dict[str, float | None]] = {}
    for workers in counts:
        tiny_row = by_name.get(overhead.row_name("tiny", workers))
        cat_row = by_name.get(overhead.row_name("cat", workers))
        if tiny_row is None or cat_row is None:
            continue
        curve[str(workers)] = {
            "tiny_req_s": tiny_row.rps,
            "cat_req_s": cat_row.rps,
            "cat_over_decode_limit": cat_row.rps / decode.images_per_s,
            "tiny_mean_batch": tiny_row.mean_batch,
            "cat_mean_batch": cat_row.mean_batch,
        }
    out.set("curve", curve)
    print("workers  tiny req/s  cat req/s  cat / decode limit")
    for count, point in curve.items():
        print(
            f"{count:>7}  {point['tiny_req_s']:>10.0f}  {point['cat_req_s']:>9.0f}  "
            f"{point['cat_over_decode_limit']:>18.2f}"
        )
    if left_out:
        raise Partial(f"budget: workers {', '.join(map(str, left_out))} left out")
