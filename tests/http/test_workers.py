"""``server.workers = 2``: HTTP worker processes bridged to the primary, through real servers
on 127.0.0.1. The behaviours shared with one process (drain, notify, replica restarts, slow
clients, disconnects) run with ``workers`` 1 and 2 in their own test files."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from benchmarks.rss import http_worker_pids
from tests.http.test_protocol import metric
from tests.support import Server, running_server, shared

TWO = ("--set", "workers=2")


def worker_pids(server: Server) -> list[int]:
    """The HTTP worker processes of ``server`` (children running gre.http.worker)."""
    return http_worker_pids(server.process.pid)


def wait_for_workers(server: Server, count: int, unlike: frozenset[int] = frozenset()) -> list[int]:
    """The ``count`` worker pids once there are that many, none of them in ``unlike``."""
    end = time.monotonic() + 30
    while time.monotonic() < end:
        pids = worker_pids(server)
        if len(pids) == count and not set(pids) & unlike:
            return pids
        time.sleep(0.05)
    pytest.fail(f"never {count} workers (besides {unlike}): {worker_pids(server)}")


def ring_resident_kib(pid: int) -> int:
    """How much of worker ``pid``'s body ring it has written (its mapping's Rss), KiB."""
    lines = Path(f"/proc/{pid}/smaps").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith("/memfd:gre-bodies (deleted)"))
    rss = next(line for line in lines[start + 1 :] if line.startswith("Rss:"))
    return int(rss.split()[1])


def minor_faults(pid: int) -> int:
    """Process ``pid``'s minor page faults so far (``/proc/PID/stat`` field 10)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[7])


def test_two_workers_serve_every_route(tmp_path: Path) -> None:
    cat = shared("images/cat.jpg").read_bytes()
    with running_server(tmp_path, *TWO, "--set", "max_body_bytes=200000") as server:
        assert len(wait_for_workers(server, 2)) == 2
        with server.client() as client:
            answer = client.post(
                "/api/classify?top_k=1", content=cat, headers={"X-Request-Id": "w-1"}
            )
            assert answer.status_code == 200
            assert [row["label"] for row in answer.json()] == ["sfw"]
            assert answer.headers["x-request-id"] == "w-1"
            assert answer.headers["server-timing"].startswith("queue;dur=")
            bad = client.post("/api/classify", content=b"not an image")
            assert (bad.status_code, bad.json()["error"]) == (400, "bad_image")
            large = client.post("/api/classify", content=b"x" * 300_000)
            assert (large.status_code, large.json()["error"]) == (413, "too_large")

            def pieces() -> object:  # chunked: the primary pulls each piece from the worker
                for start in range(0, len(cat), 16_384):
                    yield cat[start : start + 16_384]

            chunked = client.post("/api/classify?top_k=1", content=pieces())  # type: ignore[arg-type]
            assert chunked.json() == answer.json()
            page = client.get("/")  # a FileResponse: streamed, START then CHUNKs
            assert page.status_code == 200
            assert "<html" in page.text.lower()
            assert client.get("/readyz").json()["ready"] is True
            assert client.get("/api/model").json()["batches_by_size"] == {"1": 2}
            assert client.get("/nowhere").status_code == 404
            assert client.get("/api/classify").status_code == 405
            text = client.get("/metrics").text
        handed = [metric(text, "gre_http_worker_requests_total", worker=str(i)) for i in (0, 1)]
        assert sum(handed) >= 9  # every request so far but the /metrics one
        assert metric(text, "gre_requests_total", code="200") == 2


async def test_requests_from_both_workers_meet_in_one_batch(tmp_path: Path) -> None:
    """One batcher for every front end: 32 requests on 32 connections, spread over both
    workers by the kernel, make one batch of 32."""
    settings = (*TWO, "--engine", "null", "--set", "max_batch_size=32",
                "--set", "max_queue_delay_ms=3000")  # fmt: skip
    tiny = shared("images/cat_gray.jpg").read_bytes()
    with running_server(tmp_path, *settings) as server:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
            answers = await asyncio.gather(
                *(client.post("/api/classify", content=tiny) for _ in range(32))
            )
            assert [a.status_code for a in answers] == [200] * 32
            assert (await client.get("/api/model")).json()["batches_by_size"] == {"32": 1}
            text = (await client.get("/metrics")).text
    handed = [metric(text, "gre_http_worker_requests_total", worker=str(i)) for i in (0, 1)]
    assert all(count > 0 for count in handed), handed  # 2**-31 to fail by chance


@pytest.fixture
async def queued_server(tmp_path: Path) -> AsyncIterator[Server]:
    """Two workers, requests held in the queue for 5 s (a batch of 64 never fills)."""
    settings = (*TWO, "--engine", "null", "--set", "max_batch_size=64",
                "--set", "max_queue_delay_ms=5000")  # fmt: skip
    with running_server(tmp_path, *settings) as server:
        yield server


async def test_a_killed_worker_is_replaced_and_loses_only_its_own_requests(
    queued_server: Server,
) -> None:
    server = queued_server
    tiny = shared("images/cat_gray.jpg").read_bytes()
    victim = wait_for_workers(server, 2)[0]
    ids = [f"req-{i}" for i in range(16)]

    async def one(client: httpx.AsyncClient, rid: str) -> httpx.Response | Exception:
        try:
            return await client.post("/api/classify", content=tiny, headers={"X-Request-Id": rid})
        except httpx.TransportError as exc:  # its worker died with its connection
            return exc

    # One client per request: a connection each, spread over the workers.
    clients = [httpx.AsyncClient(base_url=server.url, timeout=60) for _ in ids]
    try:
        sent = [asyncio.ensure_future(one(c, rid)) for c, rid in zip(clients, ids, strict=True)]
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as watcher:
            for _ in range(200):
                if (await watcher.get("/api/model")).json()["queue"]["waiting"] == len(ids):
                    break
                await asyncio.sleep(0.02)
            else:
                pytest.fail("the requests never all waited in the queue")
            os.kill(victim, signal.SIGKILL)
            results = await asyncio.gather(*sent)
        # A new connection: the watcher's own may have been the dead worker's.
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as after:
            served = (await after.get("/api/model")).json()["batches_by_size"]
    finally:
        for client in clients:
            await client.aclose()
    answered = [r for r in results if isinstance(r, httpx.Response)]
    lost = [r for r in results if not isinstance(r, httpx.Response)]
    assert answered, results  # 2**-15 that all 16 went to one worker
    assert lost, results
    for rid, result in zip(ids, results, strict=True):
        if isinstance(result, httpx.Response):  # answered once, and as its own
            assert result.status_code == 200
            assert result.headers["x-request-id"] == rid
    # The dead worker's requests left the queue: the batch holds only the others.
    assert served == {str(len(answered)): 1}
    replacement = wait_for_workers(server, 2, unlike=frozenset({victim}))
    # A connection each, so that both workers answer: the new process is sent the labels
    # anew (gre.http.bridge_answers), 2**-8 that none of the 8 reaches it.
    for _ in range(8):
        with server.client() as fresh:
            answer = fresh.post("/api/classify", content=tiny, timeout=30)
            assert answer.status_code == 200
            assert {row["label"] for row in answer.json()} == {"sfw", "nsfw"}
    with server.client() as fresh:
        assert metric(fresh.get("/metrics").text, "gre_http_worker_restarts_total") == 1
    assert victim not in replacement
    output = server.output()
    assert "HTTP worker 0 exited with -9" in output or "HTTP worker 1 exited with -9" in output


async def test_photos_crossing_the_body_ring_keep_their_own_answers(tmp_path: Path) -> None:
    """Photos are written into each worker's body ring (gre.http.body_ring) and read out by
    the main process: 90 at once, three different photos, more than a ring holds (some cross
    inline), each answered as it is when sent alone."""
    names = ("cat.jpg", "cat_gray.jpg", "fish-bike.jpg")
    photos = [shared(f"images/{name}").read_bytes() for name in names]
    # A deadline that a slow machine's 90 queued photos are well within: admission is
    # not what this tests.
    settings = (*TWO, "--set", "max_body_bytes=200000", "--set", "timeout_ms=100000")
    with running_server(tmp_path, *settings) as server:
        limits = httpx.Limits(max_connections=90)
        async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as client:

            async def nsfw(photo: bytes) -> float:
                answer = await client.post("/api/classify?top_k=2", content=photo)
                assert answer.status_code == 200, answer.text
                return float(next(r["confidence"] for r in answer.json() if r["label"] == "nsfw"))

            alone = [await nsfw(photo) for photo in photos]
            together = await asyncio.gather(*(nsfw(photos[i % 3]) for i in range(90)))
            # Again: the main process's heap keeps the first 90 bodies' memory for these
            # (gre.malloc_thresholds), where glibc's defaults fault ~15 pages in per photo.
            faults = minor_faults(server.process.pid)
            again = await asyncio.gather(*(nsfw(photos[i % 3]) for i in range(90)))
            faults = minor_faults(server.process.pid) - faults
        written = [ring_resident_kib(pid) for pid in wait_for_workers(server, 2)]
    assert sum(written) > 1_000, written  # the photos went through the rings, not inline
    assert faults < 90 * 3, faults
    assert again == together
    # The default model is sure all three are sfw; their nsfw confidences (4e-6, 1.4e-5,
    # 2.4e-4) tell them apart, and a batch moves them by float rounding at most.
    assert all(abs(a - b) > 0.5 * max(a, b) for a in alone for b in alone if a is not b), alone
    assert together == [pytest.approx(alone[i % 3], rel=1e-3) for i in range(90)]
