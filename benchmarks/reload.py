"""Reload under load: what a model swap costs the requests in flight.

    python -m benchmarks.reload [--concurrency 16] [--before 5] [--after 5]
                                [--to CONFIG] [--set KEY=VALUE ...]

Starts one ``gre serve`` here on a config file of its own (the embedded open_nsfw, with
``admin_reload = true``), runs a closed loop of real photos at ``--concurrency``, and after
``--before`` seconds rewrites the file to ``--to`` (default: the same model again, so the
figures are the reload's own cost) and calls ``POST /admin/reload``. It keeps the load on for
``--after`` seconds once the reload has answered, then prints, for the windows before, during
and after the reload: answers, throughput, p50/p99 latency and every non-200 status; the
reload's duration and answer; and the replicas' names after it. Target: 0 non-200 answers
and 0 connection errors (the requests still in flight when the client stops are cancelled by
it, not failures). Exit status 1 when it is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import uvloop

from benchmarks.data import distinct_jpegs
from benchmarks.httpclient import fetch
from benchmarks.loadgen import ClosedLoop, Sample, image_requests
from benchmarks.report import table
from benchmarks.servers import gre_for_script
from benchmarks.stats import summarize

#: Makes the embedded model's config file reloadable over HTTP from this machine.
RELOADABLE = "[server]\nadmin_reload = true\n"


def window(samples: list[Sample], start: float, end: float) -> list[Sample]:
    """The samples completed in [start, end) (``time.perf_counter`` seconds)."""
    return [s for s in samples if start <= s[0] < end]


def row(name: str, samples: list[Sample], seconds: float) -> list[str]:
    summary = summarize(samples, max(seconds, 1e-9))
    errors = ", ".join(f"{k}: {v}" for k, v in summary.errors.items()) or "none"
    return [
        name,
        str(summary.requests),
        f"{summary.throughput:.1f}",
        f"{summary.p50_ms:.1f}",
        f"{summary.p99_ms:.1f}",
        errors,
    ]


async def measure(args: argparse.Namespace, config: Path) -> int:
    """Run the load and the reload; print the report; returns the exit status."""
    with gre_for_script(config, args.settings) as (target, _):
        loop = ClosedLoop(target, image_requests(target, distinct_jpegs(8)), args.concurrency)
        await loop.start()
        begin = time.perf_counter()
        await asyncio.sleep(args.before)
        config.write_text(args.to.read_text() if args.to else RELOADABLE)
        asked = time.perf_counter()
        answer = await fetch(target.with_path("/admin/reload"), "POST")
        answered = time.perf_counter()
        await asyncio.sleep(args.after)
        unanswered = await loop.stop()
        end = time.perf_counter()
        described = json.loads((await fetch(target.with_path("/api/model"))).body)
    samples = loop.recorder.samples
    print(f"closed loop at concurrency {args.concurrency}, real photos; reload asked at "
          f"{asked - begin:.1f} s")  # fmt: skip
    windows = [
        ("before", begin, asked),
        ("during", asked, answered),
        ("after", answered, end),
    ]
    rows = [row(name, window(samples, a, b), b - a) for name, a, b in windows]
    header = ["window", "answers", "200/s", "p50 ms", "p99 ms", "non-200"]
    print("\n".join(table(header, rows)))
    print(f"reload: {answer.status} in {(answered - asked) * 1e3:.0f} ms: {answer.body.decode()}")
    print(f"replicas after: {[r['name'] for r in described['replicas']]}; "
          f"generation {described['version']['generation']}")  # fmt: skip
    bad = sum(1 for s in samples if s[2] != 200)
    print(f"non-200 answers: {bad}; in flight when the client stopped (not failures): {unanswered}")
    return 0 if answer.status == 200 and bad == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--before", type=float, default=5.0, help="Load before the reload, s.")
    parser.add_argument("--after", type=float, default=5.0, help="Load after it answers, s.")
    parser.add_argument(
        "--to", type=Path, help="Config file to reload to (it must set admin_reload = true)."
    )
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KV")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gre-reload-") as directory:
        config = Path(directory) / "gre.toml"
        config.write_text(RELOADABLE)
        return uvloop.run(measure(args, config))


if __name__ == "__main__":
    sys.exit(main())
