"""Soak: many mixed valid and invalid requests; gre's memory must stay put and nothing may 5xx.

    python -m benchmarks.soak [--requests 100000] [--connections 16] [--valid-share 0.04]
                              [--config FILE] [--set KEY=VALUE ...] [--no-flood]

Against one ``gre serve`` started here (access log off), ``--connections`` clients send back
to back on kept-alive connections a shuffled mix (printed first) of real photos (several
distinct ones, JPEG and PNG, some with ``top_k``) and invalid requests: empty, garbage, GIF,
truncated and corrupted photos, decompression bombs (PNG and JPEG headers declaring 10^10
pixels), bad ``top_k``, bad ``X-Request-Timeout-Ms``, unknown path, wrong method, a body over
``max_body_bytes`` declared by Content-Length (on a connection of its own, closed after the
answer) or streamed chunked, and malformed HTTP. Mostly cheap invalid requests, so that
100,000 finish in minutes on 2 cores; the valid share keeps the replicas busy throughout.

A warm-up comes first: three rounds of one valid photo per connection at once (the largest
batches the soak can make, whose working memory the replicas keep), then ``--warmup`` requests
of the mix. RSS (VmRSS) of the front end and every replica is read after it, at every tenth of
the run, and at the end; the first and the last reading follow one photo sent alone, because a
replica's net keeps its blobs sized for its last batch. Prints the status counts per kind,
unexpected statuses, and the RSS table. Targets: end RSS within 50 MB of the after-warm-up RSS
for every process; 0 answers 5xx and 0 connection errors; every valid photo 200. Then, on the
same server, one round of the body flood of ``benchmarks/flood.py`` (150 uploads of 12 MiB of
a declared 16 MiB, stalled; target: RSS growth within ``max_inflight_body_bytes`` + 64 MiB, a
photo still answered 200; ``--no-flood`` skips it). Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import struct
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import uvloop

from benchmarks.data import distinct_jpegs, photo_paths
from benchmarks.flood import flood
from benchmarks.httpclient import Connection, Target, fetch
from benchmarks.rss import MIB, rss_table, service_rss
from benchmarks.servers import gre_for_script
from benchmarks.verdicts import print_verdicts
from gre.config import load_config

#: The most each process's RSS may grow from after the warm-up to the end.
RSS_TARGET_BYTES = 50 * 1000 * 1000


def http_request(
    method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    """A complete HTTP/1.1 request; Content-Length from ``body`` unless ``headers`` set it."""
    fields = {"Host": "gre", **(headers or {})}
    if "Content-Length" not in fields and "Transfer-Encoding" not in fields:
        fields["Content-Length"] = str(len(body))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return head.encode("latin-1") + b"\r\n" + body


def png_bomb() -> bytes:
    """A real 8x8 PNG whose IHDR (CRC fixed) declares 100,000 x 100,000 pixels."""
    ok, png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    assert ok
    data = bytearray(png.tobytes())
    data[16:24] = struct.pack(">II", 100_000, 100_000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def jpeg_bomb(photo: bytes) -> bytes:
    """A real JPEG whose frame header (SOF0) declares 65,000 x 65,000 pixels."""
    sof = photo.index(b"\xff\xc0")
    return photo[: sof + 5] + struct.pack(">HH", 65_000, 65_000) + photo[sof + 9 :]


def corrupted(photo: bytes, rng: random.Random) -> bytes:
    """The photo's header up to its scan data, then random bytes."""
    scan = photo.index(b"\xff\xda")
    return photo[: scan + 14] + rng.randbytes(len(photo) - scan - 14)


@dataclass(frozen=True)
class Kind:
    """One kind of request: ``weight`` in the mix, the raw ``requests`` it cycles through,
    the statuses expected, and whether it needs a connection of its own (closed after)."""

    name: str
    weight: float
    requests: tuple[bytes, ...]
    expected: frozenset[int]
    own_connection: bool = False


def build_kinds(valid_share: float, max_body_bytes: int) -> list[Kind]:
    """The mix; weights of the invalid kinds are relative and fill ``1 - valid_share``."""
    rng = random.Random(0)
    jpegs = distinct_jpegs(12)
    pngs = [p.read_bytes() for p in photo_paths() if p.suffix == ".png"]
    cat = jpegs[0]

    def post(body: bytes, path: str = "/api/classify", **headers: str) -> bytes:
        return http_request("POST", path, body, headers)

    chunk = b"\0" * (max_body_bytes + 1)
    chunked = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n0\r\n\r\n"
    invalid = [
        Kind("empty", 10, (post(b""),), frozenset({400})),
        Kind(
            "garbage", 12, tuple(post(rng.randbytes(n)) for n in (3, 200, 5000)), frozenset({400})
        ),
        Kind("gif", 6, (post(b"GIF89a" + rng.randbytes(500)),), frozenset({415})),
        Kind("truncated", 1, tuple(post(j[: len(j) // 2]) for j in jpegs[:4]), frozenset({400})),
        Kind(
            "corrupted", 1, tuple(post(corrupted(j, rng)) for j in jpegs[:4]), frozenset({200, 400})
        ),
        Kind("png_bomb", 8, (post(png_bomb()),), frozenset({413})),
        Kind("jpeg_bomb", 8, (post(jpeg_bomb(cat)),), frozenset({413})),
        Kind(
            "bad_top_k",
            10,
            tuple(post(cat, f"/api/classify?top_k={k}") for k in ("0", "abc", "100000", "-1")),
            frozenset({422}),
        ),
        Kind(
            "bad_timeout",
            8,
            tuple(post(cat, **{"X-Request-Timeout-Ms": v}) for v in ("soon", "-5", "0", "inf")),
            frozenset({400}),
        ),
        Kind(
            "unknown_path", 8, (post(cat, "/api/classify/x"), post(b"", "/nope")), frozenset({404})
        ),
        Kind("wrong_method", 8, (http_request("GET", "/api/classify"),), frozenset({405})),
        Kind(
            "too_large_declared",
            2,
            (post(b"\0" * 1024, **{"Content-Length": str(max_body_bytes + 1)}),),
            frozenset({413}),
            own_connection=True,
        ),
        Kind(
            "too_large_streamed",
            0.1,
            (http_request("POST", "/api/classify", chunked, {"Transfer-Encoding": "chunked"}),),
            frozenset({413}),
        ),
        Kind(
            "malformed_http",
            1,
            (b"POST /api/classify HTTP/1.1\r\nContent-Length: x\r\n\r\n", b"\x00\x01\x02\r\n\r\n"),
            frozenset({400}),
            own_connection=True,
        ),
    ]
    scale = (1 - valid_share) / sum(k.weight for k in invalid)
    valid = (*(post(image) for image in jpegs + pngs), post(cat, "/api/classify?top_k=1"))
    return [Kind("valid", valid_share, valid, frozenset({200}))] + [
        Kind(k.name, k.weight * scale, k.requests, k.expected, k.own_connection) for k in invalid
    ]


class Soak:
    """Sends a shuffled schedule of kinds from ``connections`` workers; tallies statuses."""

    def __init__(self, target: Target, kinds: list[Kind], connections: int, seed: int) -> None:
        self.target = target
        self.kinds = kinds
        self.connections = connections
        self.rng = random.Random(seed)
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.sent = 0

    async def run(self, count: int, on_progress: Callable[[int], None] | None = None) -> None:
        """Send ``count`` requests; ``on_progress(done)`` after each."""
        schedule = self.rng.choices(self.kinds, [k.weight for k in self.kinds], k=count)
        queue = iter(enumerate(schedule))

        async def worker() -> None:
            connection: Connection | None = None
            for i, kind in queue:
                request = kind.requests[i % len(kind.requests)]
                if kind.own_connection:
                    status = await self._send_alone(request)
                else:
                    if connection is None or connection.closed:
                        connection = await Connection.open(self.target)
                    try:
                        status = (await connection.send(request)).status
                    except ConnectionError:
                        status = 0
                        connection.close()
                self.statuses[(kind.name, status)] += 1
                self.sent += 1
                if on_progress is not None:
                    on_progress(self.sent)
            if connection is not None:
                connection.close()

        await asyncio.gather(*(worker() for _ in range(self.connections)))

    async def peak(self, rounds: int) -> None:
        """``rounds`` times, every worker's valid photo at once: the largest batches the soak
        can make (one request in flight per connection), so that warm RSS includes them."""
        valid = next(k for k in self.kinds if k.name == "valid")
        for _ in range(rounds):
            requests = [valid.requests[i % len(valid.requests)] for i in range(self.connections)]
            for status in await asyncio.gather(*map(self._send_alone, requests)):
                self.statuses[(valid.name, status)] += 1

    async def settle(self) -> None:
        """One valid photo alone, then a pause: a replica's net keeps its blobs sized for the
        last batch, so RSS is compared after a batch of one each time."""
        valid = next(k for k in self.kinds if k.name == "valid")
        self.statuses[(valid.name, await self._send_alone(valid.requests[0]))] += 1
        await asyncio.sleep(0.5)

    async def _send_alone(self, request: bytes) -> int:
        connection = await Connection.open(self.target)
        try:
            return (await connection.send(request)).status
        except ConnectionError:
            return 0
        finally:
            connection.close()


async def soak(target: Target, front_end_pid: int, args: argparse.Namespace) -> bool:
    """Warm up, soak, sample RSS; prints the figures, returns whether every target was met."""
    config = load_config(args.config, overrides=dict(s.split("=", 1) for s in args.settings))
    kinds = build_kinds(args.valid_share, config.server.max_body_bytes)
    print(f"mix of {args.requests} requests on {args.connections} connections:")
    for kind in kinds:
        codes = "/".join(map(str, sorted(kind.expected)))
        print(f"  {kind.name:<20} {100 * kind.weight:5.1f}%  expect {codes}")
    runner = Soak(target, kinds, args.connections, seed=1)
    start = time.perf_counter()
    await runner.peak(3)
    await runner.run(args.warmup)
    print(f"warm-up: {args.warmup} requests in {time.perf_counter() - start:.1f} s", flush=True)
    await runner.settle()
    samples = [("warm", await service_rss(target, front_end_pid))]
    runner.sent = 0
    every = max(1, args.requests // 10)
    marks: list[int] = []
    start = time.perf_counter()

    def progress(done: int) -> None:
        if done % every == 0:
            marks.append(done)

    sampler_done = asyncio.Event()

    async def sample() -> None:  # RSS at each tenth, read outside the workers' hot path
        seen = 0
        while not sampler_done.is_set():
            await asyncio.sleep(0.2)
            while seen < len(marks):
                done = marks[seen]
                seen += 1
                rss = await service_rss(target, front_end_pid)
                samples.append((f"{100 * done // args.requests}%", rss))
                front = (rss.get("front end") or 0) / MIB
                rate = done / (time.perf_counter() - start)
                print(f"  {done:>7} sent, {rate:6.0f} req/s, front end {front:.1f} MiB", flush=True)

    sampler = asyncio.create_task(sample())
    await runner.run(args.requests, progress)
    elapsed = time.perf_counter() - start
    sampler_done.set()
    await sampler
    await runner.settle()
    samples.append(("end", await service_rss(target, front_end_pid)))
    print(
        f"soak: {args.requests} requests in {elapsed:.1f} s ({args.requests / elapsed:.0f} req/s)"
    )

    print("status counts, warm-up included (kind: status x count):")
    unexpected = 0
    by_kind = {k.name: k for k in kinds}
    for name in by_kind:
        counts = sorted((s, n) for (k, s), n in runner.statuses.items() if k == name)
        cells = ", ".join(f"{s} x {n}" for s, n in counts)
        odd = sum(n for s, n in counts if s not in by_kind[name].expected)
        unexpected += odd
        print(f"  {name:<20} {cells}" + (f"   <- {odd} unexpected" if odd else ""))
    fives = sum(n for (_, s), n in runner.statuses.items() if s >= 500)
    errors = sum(n for (_, s), n in runner.statuses.items() if s == 0)
    valid_bad = sum(n for (k, s), n in runner.statuses.items() if k == "valid" and s != 200)
    metrics = (await fetch(target.with_path("/metrics"))).body.decode()
    served = [ln for ln in metrics.splitlines() if ln.startswith("gre_requests_total")]
    print("server's gre_requests_total: " + ", ".join(ln.split("{")[1] for ln in served))
    print("RSS (MiB):\n" + rss_table(samples))
    growth = {
        name: (end or 0) - (samples[0][1].get(name) or 0) for name, end in samples[-1][1].items()
    }
    verdicts = {
        "0 answers 5xx": fives == 0,
        "0 connection errors": errors == 0,
        "every valid photo 200": valid_bad == 0,
        **{
            f"{name} RSS within 50 MB of warm (grew {delta / 1e6:+.1f} MB)": abs(delta)
            <= RSS_TARGET_BYTES
            for name, delta in growth.items()
        },
    }
    print(f"unexpected statuses (not 5xx): {unexpected}")
    return print_verdicts(verdicts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--valid-share", type=float, default=0.04)
    parser.add_argument("--set", dest="settings", action="append", default=[])
    parser.add_argument(
        "--no-flood", dest="flood", action="store_false",
        help="Skip the closing flood (benchmarks/flood.py, one round) on the soaked server.",
    )  # fmt: skip
    args = parser.parse_args()
    with gre_for_script(args.config, args.settings) as (target, front_end_pid):
        ok = uvloop.run(soak(target, front_end_pid, args))
        if args.flood:
            print("\nflood on the soaked server (benchmarks/flood.py):")
            ok = uvloop.run(flood(target, front_end_pid, flood_arguments(args))) and ok
    sys.exit(0 if ok else 1)


def flood_arguments(args: argparse.Namespace) -> argparse.Namespace:
    """The flood of issue 16, once: 150 uploads of 12 MiB of a declared 16 MiB, stalled."""
    return argparse.Namespace(
        config=args.config, settings=args.settings, connections=150, declared_mib=16.0,
        sent_mib=12.0, hold_s=2.0, rounds=1,
    )  # fmt: skip


if __name__ == "__main__":
    main()
