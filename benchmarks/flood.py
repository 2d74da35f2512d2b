"""Flood: clients upload most of a large declared body and stall (issue 16); gre's front end
must hold no more than ``max_inflight_body_bytes`` of it and still answer a photo.

    python -m benchmarks.flood [--connections 150] [--declared-mib 16] [--sent-mib 12]
                               [--hold-s 2] [--rounds 2] [--config FILE] [--set KEY=VALUE ...]
    python -m benchmarks.flood --photos [--connections 100] [--photo-mib 3.4] [--rounds 2] ...

Against one ``gre serve`` started here (access log off): ``--connections`` raw connections at
once each send a ``POST /api/classify`` head declaring ``--declared-mib`` MiB, then
``--sent-mib`` MiB of that body, then stall. gre holds some of them, answers the rest 503
``too_many_bytes`` before reading their bodies, and cuts one off to make room when the photo
comes: once the flood's bytes are sent, one real photo is posted on a connection of its own.
The front end's RSS (VmRSS; with ``--set workers=N``, of its main process and HTTP workers
together) is sampled every 50 ms from before the flood until ``--hold-s``
after the photo; then the flood's connections close and ``gre_inflight_body_bytes`` must
return to 0. ``--rounds`` floods in turn show whether what the first leaves resident (freed
memory the allocator keeps) is reused or grows.

``--photos``: the bodies are whole instead, ``--connections`` valid JPEGs of ``--photo-mib`` MiB
(:func:`large_photo`) posted at once, which gre queues, batches and answers while the budget
holds: they reach the scheduler and the replica, so the front end's copies of a body beyond
the protocol's count too (batches pickled whole to their replica grew the front end +466 MiB
against +279 MiB through the arena, before batches stopped at ``max_batch_bytes``). Same RSS
target; every answer must be 200 or 503 ``too_many_bytes`` or ``queue_full`` (or the reset of a
refused upload), and some 200. With ``workers = 2`` this misses the RSS target (+389 to
+443 MiB; README's Limits says where the memory is).

Prints, per round, what the uploads got (an answer, or the error that ended sending: a refused
upload's connection is closed under it, and a reset can swallow the answer), the photo's status
and time, the bytes in flight while the flood held, and the front end's RSS before, at its peak
and after. Targets: peak RSS within ``max_inflight_body_bytes`` + 64 MiB of the first round's
start; the photo answered 200 every time; 0 bytes in flight after every flood. Exit status 1
when a target is missed. :class:`Flood` is also what
tests/http/test_budget.py floods with.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import uvloop
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.data import shared_path
from benchmarks.httpclient import Target, fetch
from benchmarks.rss import MIB, http_worker_pids, rss_bytes
from benchmarks.servers import gre_for_script
from benchmarks.verdicts import print_verdicts
from gre.config import load_config

#: What a flood may grow the front end's RSS by beyond ``max_inflight_body_bytes``: the
#: interpreter's and the sockets' buffers, the photo, the refusals (the issue's target).
SLACK_BYTES = 64 * MIB
#: Bytes written per ``drain()``: what one connection buffers in this process at most.
PIECE_BYTES = 256 * 1024
#: How often RSS is sampled, s.
SAMPLE_S = 0.05


@dataclass
class Upload:
    """One flooding connection: what the server answered, if it did, or why sending stopped."""

    status: int | None = None  #: the answer's HTTP status (``None``: no answer)
    error: str | None = None  #: its JSON ``error`` code
    failure: str | None = None  #: why connecting or sending failed (an exception's name)
    writer: asyncio.StreamWriter | None = None
    reading: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def outcome(self) -> str:
        """``"503 too_many_bytes"`` (the answer), why it ended without one (``"closed without
        an answer"``, ``"ConnectionResetError"``...), or ``"held"`` (open, no answer: the
        server holds its body)."""
        if self.status is not None:
            return f"{self.status} {self.error or ''}".strip()
        return self.failure or "held"


class Flood:
    """``connections`` uploads to ``target``, each declaring ``declared`` bytes and sending
    ``sent`` of them (zeros), all at once; :meth:`start`, then :meth:`close`."""

    def __init__(self, target: Target, connections: int, declared: int, sent: int) -> None:
        self.target = target
        self.declared = declared
        self.sent = sent
        self.uploads = [Upload() for _ in range(connections)]
        self._payload = memoryview(bytes(sent))  # one buffer that every upload sends from

    async def start(self) -> None:
        """Connect every upload and send its head and ``sent`` body bytes, all at once;
        returns once each has sent them or been refused (a send error is its outcome)."""
        await asyncio.gather(*map(self._upload, self.uploads))

    def outcomes(self) -> Counter[str]:
        """How many uploads got each :attr:`Upload.outcome`."""
        return Counter(upload.outcome for upload in self.uploads)

    async def close(self) -> None:
        """Close every connection; returns once each answer has been read to its end."""
        for upload in self.uploads:
            if upload.writer is not None:
                upload.writer.close()
        readers = [u.reading for u in self.uploads if u.reading is not None]
        await asyncio.gather(*readers, return_exceptions=True)

    async def _upload(self, upload: Upload) -> None:
        try:
            reader, upload.writer = await asyncio.open_connection(
                self.target.host, self.target.port
            )
        except OSError as exc:
            upload.failure = f"connect: {type(exc).__name__}"
            return
        upload.reading = asyncio.create_task(self._read(upload, reader))
        head = (
            f"POST {self.target.path} HTTP/1.1\r\nHost: {self.target.host}\r\n"
            f"Content-Length: {self.declared}\r\n\r\n"
        )
        try:
            upload.writer.write(head.encode("latin-1"))
            for offset in range(0, self.sent, PIECE_BYTES):
                if upload.writer.is_closing():
                    break
                upload.writer.write(self._payload[offset : offset + PIECE_BYTES])
                await upload.writer.drain()
        except OSError as exc:  # refused or cut off: the server closed the connection
            upload.failure = type(exc).__name__

    @staticmethod
    async def _read(upload: Upload, reader: asyncio.StreamReader) -> None:
        """Read the answer as it comes (before a reset can discard it), to the end."""
        data = b""
        try:
            while chunk := await reader.read(65536):
                data += chunk
        except OSError as exc:
            upload.failure = upload.failure or type(exc).__name__
        if not data.startswith(b"HTTP/1.1 "):
            upload.failure = upload.failure or "closed without an answer"
            return
        head, _, body = data.partition(b"\r\n\r\n")
        upload.status = int(head.split()[1])
        with contextlib.suppress(ValueError, KeyError, TypeError):
            upload.error = json.loads(body).get("error")


def metric(text: str, name: str, **labels: str) -> float:
    """A sample's value from Prometheus text, 0 if absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def metrics_text(target: Target) -> str:
    """The server's ``/metrics``."""
    return (await fetch(target.with_path("/metrics"))).body.decode()


async def settled(probe: Callable[[], Awaitable[bool]], timeout_s: float) -> bool:
    """Poll ``probe`` every 50 ms until it passes; whether it did within ``timeout_s``."""
    end = time.monotonic() + timeout_s
    while not await probe():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(0.05)
    return True


def front_end_pids(pid: int) -> list[int]:
    """The front end ``pid`` and its HTTP workers (``workers`` > 1): the processes that hold
    request bodies."""
    return [pid, *http_worker_pids(pid)]


def whose(pids: Sequence[int]) -> str:
    """What the RSS of ``pids`` (:func:`front_end_pids`) is of, for the printed figures."""
    return "front end" if len(pids) == 1 else f"front end (main + {len(pids) - 1} HTTP workers)"


def total_rss(pids: Sequence[int]) -> int:
    """The RSS of ``pids`` together, bytes (the sum of each one's; 0 for one that has
    exited)."""
    return sum(rss_bytes(pid) or 0 for pid in pids)


class RssSampler:
    """The largest RSS of ``pids`` together (bytes; the sum of each one's) seen by sampling
    every :data:`SAMPLE_S` seconds between :meth:`start` and :meth:`stop`: the front end, or
    its main process and HTTP workers."""

    def __init__(self, *pids: int) -> None:
        self.pids = pids
        self.peak = self.rss()
        self._task: asyncio.Task[None] | None = None

    def rss(self) -> int:
        """The processes' RSS now, bytes (:func:`total_rss`)."""
        return total_rss(self.pids)

    def start(self) -> None:
        """Sample in the background."""
        self._task = asyncio.create_task(self._sample())

    async def stop(self) -> int:
        """Stop sampling; the peak, bytes."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.peak = max(self.peak, self.rss())
        return self.peak

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self.rss())
            await asyncio.sleep(SAMPLE_S)


async def steady_rss(*pids: int, timeout_s: float = 10.0, within: int = MIB) -> None:
    """Return once the RSS of ``pids`` together has moved less than ``within`` bytes over
    0.5 s (the bytes sent have been read, not just queued in the sockets' buffers), or after
    ``timeout_s``."""
    end = time.monotonic() + timeout_s
    last = total_rss(pids)
    while time.monotonic() < end:
        await asyncio.sleep(0.5)
        now = total_rss(pids)
        if abs(now - last) < within:
            return
        last = now


def large_photo(mib: float) -> bytes:
    """A JPEG of about ``mib`` MiB: uniform noise at quality 95 (~1.2 bytes a pixel, which
    the replica decodes as it would a photo), 4:3, the same bytes on every call."""
    pixels = max(16, int(mib * MIB / 1.2))
    width = int((pixels * 4 / 3) ** 0.5)
    noise = np.random.default_rng(0).integers(0, 256, (width * 3 // 4, width, 3), np.uint8)
    ok, encoded = cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise RuntimeError("OpenCV could not encode the large photo")
    return encoded.tobytes()


async def post_all(target: Target, body: bytes, count: int) -> Counter[str]:
    """POST ``body`` on ``count`` fresh connections at once; how many got each outcome:
    ``"200"``, ``"503 too_many_bytes"`` (status and JSON ``error``), or the exception's
    name when the connection failed (a refused upload's is closed under it)."""

    async def one() -> str:
        try:
            answer = await fetch(target, "POST", body)
        except OSError as exc:  # ConnectionError included
            return type(exc).__name__
        if answer.status == 200:
            return "200"
        with contextlib.suppress(ValueError, KeyError, TypeError):
            return f"{answer.status} {json.loads(answer.body)['error']}"
        return str(answer.status)

    return Counter(await asyncio.gather(*(one() for _ in range(count))))


#: What a burst of whole photos may get: answered, refused (the budget; admission, on a slow
#: replica), or cut off by the budget.
PHOTO_OUTCOMES = frozenset({"200", "503 too_many_bytes", "503 queue_full", "ConnectionResetError"})


@dataclass
class Round:
    """One flood's figures: the front end's RSS before, at the peak and after (bytes), the
    bytes in flight while it held and whether they returned to 0, what the uploads got, and
    the photo's status and time (s)."""

    before: int
    peak: int
    after: int
    held: float
    released: bool
    outcomes: Counter[str]
    photo_status: int
    photo_s: float


async def flood_round(
    target: Target, pids: Sequence[int], args: argparse.Namespace, photo: bytes
) -> Round:
    """Flood, post ``photo`` while it holds, close the flood; its figures (RSS: of ``pids``
    together)."""
    before = total_rss(pids)
    sampler = RssSampler(*pids)
    sampler.start()
    declared, sent = int(args.declared_mib * MIB), int(args.sent_mib * MIB)
    uploads = Flood(target, args.connections, declared, sent)
    await uploads.start()
    await steady_rss(*pids)
    start = time.perf_counter()
    answer = await fetch(target, "POST", photo)
    photo_s = time.perf_counter() - start
    await asyncio.sleep(args.hold_s)
    held = metric(await metrics_text(target), "gre_inflight_body_bytes")
    peak = await sampler.stop()
    outcomes = uploads.outcomes()
    await uploads.close()

    async def drained() -> bool:
        return metric(await metrics_text(target), "gre_inflight_body_bytes") == 0

    released = await settled(drained, 10.0)
    await asyncio.sleep(0.5)
    after = total_rss(pids)
    return Round(before, peak, after, held, released, outcomes, answer.status, photo_s)


@dataclass
class PhotoRound:
    """One burst of whole photos: the front end's RSS before, at the peak and after (bytes),
    what the posts got (:func:`post_all`), how long the burst took (s), and whether the bytes
    in flight returned to 0."""

    before: int
    peak: int
    after: int
    outcomes: Counter[str]
    burst_s: float
    released: bool


async def photo_round(
    target: Target, pids: Sequence[int], connections: int, photo: bytes
) -> PhotoRound:
    """POST ``photo`` on ``connections`` connections at once, sampling the RSS of ``pids``
    together until
    every answer is in; its figures."""
    before = total_rss(pids)
    sampler = RssSampler(*pids)
    sampler.start()
    start = time.perf_counter()
    outcomes = await post_all(target, photo, connections)
    burst_s = time.perf_counter() - start
    peak = await sampler.stop()

    async def drained() -> bool:
        return metric(await metrics_text(target), "gre_inflight_body_bytes") == 0

    released = await settled(drained, 10.0)
    await asyncio.sleep(0.5)
    return PhotoRound(before, peak, total_rss(pids), outcomes, burst_s, released)


async def photo_bursts(target: Target, pid: int, args: argparse.Namespace) -> bool:
    """``--rounds`` bursts of ``--connections`` whole photos of ``--photo-mib``; prints the
    figures, returns whether the targets were met."""
    config = load_config(args.config, overrides=dict(s.split("=", 1) for s in args.settings))
    budget = config.server.max_inflight_body_bytes
    photo = large_photo(args.photo_mib)
    await fetch(target, "POST", photo)  # warm: the first photo's costs are not the burst's
    print(
        f"{args.connections} photos of {len(photo) / MIB:.2f} MiB posted at once; "
        f"max_inflight_body_bytes {budget / MIB:g} MiB, "
        f"max_batch_bytes {config.batching.max_batch_bytes / MIB:g} MiB"
    )
    pids = front_end_pids(pid)
    what = whose(pids)
    rounds = [await photo_round(target, pids, args.connections, photo) for _ in range(args.rounds)]
    for n, r in enumerate(rounds, 1):
        print(f"round {n}: {r.burst_s:.1f} s")
        print("  posts: " + ", ".join(f"{k} x {v}" for k, v in sorted(r.outcomes.items())))
        print(f"  bytes in flight back to 0: {r.released}")
        print(
            f"  {what} RSS (MiB): before {r.before / MIB:.1f}, peak {r.peak / MIB:.1f} "
            f"({(r.peak - r.before) / MIB:+.1f}), after {r.after / MIB:.1f}"
        )
    start = rounds[0].before
    limit = budget + SLACK_BYTES
    verdicts = {
        f"peak RSS growth within {limit / MIB:g} MiB of the start": all(
            r.peak - start <= limit for r in rounds
        ),
        "photos answered 200 in every burst": all(r.outcomes["200"] > 0 for r in rounds),
        "every other post refused by the budget": all(
            set(r.outcomes) <= PHOTO_OUTCOMES for r in rounds
        ),
        "0 bytes in flight after every burst": all(r.released for r in rounds),
    }
    return print_verdicts(verdicts)


async def flood(target: Target, pid: int, args: argparse.Namespace) -> bool:
    """``--rounds`` floods, a photo during each; prints the figures, returns whether the
    targets were met."""
    config = load_config(args.config, overrides=dict(s.split("=", 1) for s in args.settings))
    budget = config.server.max_inflight_body_bytes
    photo = shared_path("images/cat.jpg").read_bytes()
    await fetch(target, "POST", photo)  # warm: the first photo's costs are not the flood's
    print(
        f"{args.connections} uploads of {args.sent_mib:g} MiB of a declared "
        f"{args.declared_mib:g} MiB each; max_inflight_body_bytes {budget / MIB:g} MiB"
    )
    pids = front_end_pids(pid)
    what = whose(pids)
    rounds = [await flood_round(target, pids, args, photo) for _ in range(args.rounds)]
    for n, r in enumerate(rounds, 1):
        print(f"round {n}:")
        print("  uploads: " + ", ".join(f"{k} x {v}" for k, v in sorted(r.outcomes.items())))
        print(f"  photo during the flood: {r.photo_status} in {1e3 * r.photo_s:.0f} ms")
        print(f"  bytes in flight while held: {r.held / MIB:.1f} MiB; back to 0: {r.released}")
        print(
            f"  {what} RSS (MiB): before {r.before / MIB:.1f}, peak {r.peak / MIB:.1f} "
            f"({(r.peak - r.before) / MIB:+.1f}), after {r.after / MIB:.1f}"
        )
    rejected = metric(await metrics_text(target), "gre_rejected_total", reason="too_many_bytes")
    print(f"gre_rejected_total{{reason=too_many_bytes}}: {rejected:g}")
    start = rounds[0].before
    limit = budget + SLACK_BYTES
    verdicts = {
        f"peak RSS growth within {limit / MIB:g} MiB of the start": all(
            r.peak - start <= limit for r in rounds
        ),
        "photo answered 200 during every flood": all(r.photo_status == 200 for r in rounds),
        "0 bytes in flight after every flood": all(r.released for r in rounds),
    }
    return print_verdicts(verdicts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path)
    parser.add_argument("--photos", action="store_true", help="whole photos, not stalled uploads")
    parser.add_argument("--photo-mib", type=float, default=3.4)
    parser.add_argument("--connections", type=int, help="150; with --photos, 100")
    parser.add_argument("--declared-mib", type=float, default=16)
    parser.add_argument("--sent-mib", type=float, default=12)
    parser.add_argument("--hold-s", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--set", dest="settings", action="append", default=[])
    args = parser.parse_args()
    if args.connections is None:
        args.connections = 100 if args.photos else 150
    run = photo_bursts if args.photos else flood
    with gre_for_script(args.config, args.settings) as (target, front_end_pid):
        ok = uvloop.run(run(target, front_end_pid, args))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
