"""Service overhead benchmark: in-process limit vs HTTP at saturation vs single-request latency.

    python -m benchmarks.service [--config FILE] [--requests 2000] [--set KEY=VALUE ...]

Measures, on this machine, in one run:
  (1) the in-process limit: decode + preprocess + forward images/s through the same replica
      processes the server uses, every replica kept busy, at the best of several batch sizes;
  (2) the service at saturation: `hey -c 16 -n N -m POST -D IMAGE URL` (throughput, p50, p99);
  (3) `hey -c 1` p50 against a direct single-image call of the same pipeline in-process.
Prints (2)/(1) (target >= 0.90) and (3) - direct (target <= 2 ms). Needs Debian's `hey`.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.data import ROOT, SHARED
from benchmarks.servers import free_port, log_path
from gre.config import Config, load_config
from gre.offline import build_classifier
from gre.replicas.replica import Replica
from gre.service import Service
from gre.testing import running_gre

BATCH_SIZES = (1, 4, 8, 16, 32)


async def drive(replica: Replica, batch: list[bytes], end: float) -> int:
    """Run ``batch`` on ``replica`` back to back until ``end``; returns images classified."""
    done = 0
    while time.perf_counter() < end:
        await replica.run(batch, [5] * len(batch))
        done += len(batch)
    return done


async def in_process_limit(config: Config, image: bytes, seconds: float) -> tuple[int, float]:
    """Best (batch size, images/s) with every replica fed back-to-back batches, no HTTP."""
    # The service's own replicas, driven directly rather than through its queue.
    replicas = [Replica(spec) for spec in Service(config).specs]
    await asyncio.gather(*(r.start(config.replicas.start_timeout_s) for r in replicas))
    best = (0, 0.0)
    try:
        for size in BATCH_SIZES:
            if size > config.batching.max_batch_size:
                break
            batch, top_ks = [image] * size, [5] * size

            await asyncio.gather(*(r.run(batch, top_ks) for r in replicas))  # warm-up
            start = time.perf_counter()
            counts = await asyncio.gather(*(drive(r, batch, start + seconds) for r in replicas))
            rate = sum(counts) / (time.perf_counter() - start)
            print(f"  in-process batch {size:>2}: {rate:7.1f} img/s", flush=True)
            if rate > best[1]:
                best = (size, rate)
    finally:
        await asyncio.gather(*(r.stop() for r in replicas))
    return best


def hey(url: str, image: Path, concurrency: int, requests: int) -> dict[str, float]:
    """Run hey; returns requests/s and p50/p99 latency in ms, and the count of non-200s."""
    out = subprocess.run(
        ["hey", "-c", str(concurrency), "-n", str(requests), "-m", "POST", "-D", str(image), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = {int(p): float(s) * 1e3 for p, s in re.findall(r"(\d+)%+ in ([\d.]+) secs", out)}
    codes = dict(re.findall(r"\[(\d+)\]\s+(\d+) responses", out))
    errors = sum(int(n) for code, n in codes.items() if code != "200")
    return {"rps": rate, "p50": pct[50], "p99": pct[99], "errors": float(errors)}


def direct_latency(config: Config, image: bytes, repeats: int) -> float:
    """Median ms of one single-image classify() call in this process (same pipeline)."""
    classifier = build_classifier(config)
    try:
        for _ in range(5):
            classifier.classify([image], [5])
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            classifier.classify([image], [5])
            times.append((time.perf_counter() - start) * 1e3)
    finally:
        classifier.close()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path)
    parser.add_argument("--image", type=Path, default=SHARED / "images/cat.jpg")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=8.0, help="per in-process step")
    parser.add_argument("--set", dest="settings", action="append", default=[])
    args = parser.parse_args()
    if shutil.which("hey") is None:
        sys.exit("benchmarks.service needs `hey`: apt-get install hey (make setup does)")
    overrides = dict(s.split("=", 1) for s in args.settings)
    config = load_config(args.config, overrides=overrides)
    image = args.image.read_bytes()
    print(
        f"model {config.model.name}, engine {config.model.engine}, devices "
        f"{config.replicas.devices} x {config.replicas.instances_per_device}, cpu_threads "
        f"{config.replicas.cpu_threads or 'auto'}, max_batch_size "
        f"{config.batching.max_batch_size}",
        flush=True,
    )
    size, limit = asyncio.run(in_process_limit(config, image, args.seconds))
    print(f"(1) in-process limit: {limit:.1f} img/s at batch {size}", flush=True)
    flags = [x for s in args.settings for x in ("--set", s)]
    if args.config:
        flags += ["--config", str(args.config)]
    port = free_port()
    with running_gre(*flags, port=port, log=log_path("gre", port), cwd=ROOT) as server:
        url = f"{server.url}/api/classify"
        hey(url, args.image, 16, 200)  # warm-up
        saturated = hey(url, args.image, 16, args.requests)
        print(
            f"(2) hey -c 16 -n {args.requests}: {saturated['rps']:.1f} req/s, p50 "
            f"{saturated['p50']:.1f} ms, p99 {saturated['p99']:.1f} ms, "
            f"{saturated['errors']:.0f} non-200",
            flush=True,
        )
        single = hey(url, args.image, 1, max(200, args.requests // 10))  # p99 needs >= 100
    direct = direct_latency(config, image, max(50, args.requests // 10))
    print(f"(3) hey -c 1 p50: {single['p50']:.2f} ms; direct in-process call p50: {direct:.2f} ms")
    print(f"ratio (2)/(1): {saturated['rps'] / limit:.2f}   (target >= 0.90)")
    print(f"overhead (3) - direct: {single['p50'] - direct:.2f} ms   (target <= 2 ms)")


if __name__ == "__main__":
    main()
