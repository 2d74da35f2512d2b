"""Clients that send slowly or hold connections open, against a real server: each is cut off with
gre's JSON error while other clients are served, and nothing they sent is queued or dispatched.

Each starts a server, so only what needs one is here; tests/http/test_protocol_unit.py checks
every refusal of gre.http.protocol byte for byte, in-process."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import Server, running_server, shared

#: Only catches a hang: every cut-off here is due after about 1 s.
HANG_S = 30.0


@contextlib.asynccontextmanager
async def raw_connection(
    server: Server,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def trickle_until_closed(server: Server, head: bytes, then: bytes) -> bytes:
    """Send ``head`` at once, then ``then`` one byte every 20 ms, until the server closes the
    connection; returns everything the server sent."""
    async with raw_connection(server) as (reader, writer):
        writer.write(head)

        async def trickle() -> None:
            with contextlib.suppress(OSError):
                for byte in then:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.02)

        sender = asyncio.ensure_future(trickle())
        try:
            return await asyncio.wait_for(reader.read(), HANG_S)  # to EOF: the server closed
        finally:
            sender.cancel()


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one raw HTTP/1.1 response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
    return int(status_line.split()[1]), headers, body


def metric(text: str, name: str, **labels: str) -> float:
    """A sample's value from Prometheus text, 0 if absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


async def classify_meanwhile(client: httpx.AsyncClient, image: bytes) -> httpx.Response:
    """A normal request sent while slow clients hold their connections."""
    await asyncio.sleep(0.2)  # the slow clients are connected and sending
    return await client.post("/api/classify", content=image)


async def served_batches(client: httpx.AsyncClient) -> dict[str, int]:
    batches: dict[str, int] = (await client.get("/api/model")).json()["batches_by_size"]
    return batches


SLOW = ("--set", "header_timeout_s=1", "--set", "body_timeout_s=1")


@pytest.mark.parametrize("workers", [1, 2])
async def test_slow_head_gets_408_while_others_are_served(tmp_path: Path, workers: int) -> None:
    cat = shared("images/cat.jpg").read_bytes()
    head = b"POST /api/classify HTTP/1.1\r\nHost: x\r\n"
    endless_header = b"X-Slow: " + b"a" * 10_000  # never completes the head
    with running_server(tmp_path, *SLOW, "--set", f"workers={workers}") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=HANG_S) as client:
            cut, normal = await asyncio.gather(
                trickle_until_closed(server, head, endless_header),
                classify_meanwhile(client, cat),
            )
            assert normal.status_code == 200, normal.text
            status, headers, body = split_response(cut)
            assert status == 408
            assert headers["connection"] == "close"
            assert len(headers["x-request-id"]) == 32
            assert json.loads(body)["error"] == "request_timeout"
            assert await served_batches(client) == {"1": 1}, "the slow request was dispatched"
            text = (await client.get("/metrics")).text
        assert metric(text, "gre_rejected_total", reason="request_timeout") == 1


@pytest.mark.parametrize("workers", [1, 2])
async def test_slow_body_gets_408_before_it_is_queued(tmp_path: Path, workers: int) -> None:
    cat = shared("images/cat.jpg").read_bytes()
    head = b"POST /api/classify HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(cat)
    with running_server(tmp_path, *SLOW, "--set", f"workers={workers}") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=HANG_S) as client:
            cut, normal = await asyncio.gather(
                trickle_until_closed(server, head, cat), classify_meanwhile(client, cat)
            )
            assert normal.status_code == 200, normal.text
            status, _, body = split_response(cut)
            assert status == 408
            assert json.loads(body) == {
                "error": "request_timeout",
                "message": "the request body did not arrive within 1 s",
            }
            assert await served_batches(client) == {"1": 1}, "the slow request was dispatched"
            text = (await client.get("/metrics")).text
        assert metric(text, "gre_requests_total", code="200") == 1
        assert metric(text, "gre_requests_total", code="500") == 0  # the cut-off is no 5xx
        assert metric(text, "gre_rejected_total", reason="request_timeout") == 1


async def test_idle_keep_alive_connections_do_not_starve_others(tmp_path: Path) -> None:
    cat = shared("images/cat.jpg").read_bytes()
    settings = ("--set", "max_connections=50")
    with running_server(tmp_path, *settings) as server:
        host, port = server.url.removeprefix("http://").split(":")
        idle: list[asyncio.StreamWriter] = []
        try:
            for n in range(200):  # 4x max_connections: each after a request, or silent
                reader, writer = await asyncio.open_connection(host, int(port))
                idle.append(writer)
                if n % 2:
                    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    await asyncio.wait_for(reader.readuntil(b'{"status":"ok"}'), HANG_S)
            async with httpx.AsyncClient(base_url=server.url, timeout=HANG_S) as client:
                response = await client.post("/api/classify", content=cat)
                assert response.status_code == 200, response.text
                text = (await client.get("/metrics")).text
        finally:
            for writer in idle:
                writer.close()
        assert metric(text, "gre_rejected_total", reason="too_many_connections") == 0


async def test_a_kept_alive_connection_closes_its_timeout_after_its_last_answer(
    tmp_path: Path,
) -> None:
    # One keep-alive timer serves all of a connection's requests (gre.http.protocol): the
    # one armed after the first answer comes 0.6 s early for the second and must wait on.
    healthz = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with running_server(tmp_path, "--set", "keep_alive_timeout_s=1") as server:
        async with raw_connection(server) as (reader, writer):
            loop = asyncio.get_running_loop()
            for pause in (0.6, 0.0):
                writer.write(healthz)
                await asyncio.wait_for(reader.readuntil(b'{"status":"ok"}'), HANG_S)
                answered = loop.time()
                await asyncio.sleep(pause)
            assert await asyncio.wait_for(reader.read(), HANG_S) == b""  # closed by the server
            idle = loop.time() - answered
    assert idle >= 0.95, f"closed {idle:.2f} s after the last answer; the timeout is 1 s"


async def test_busy_connections_at_the_limit_get_503(tmp_path: Path) -> None:
    settings = ("--set", "max_connections=5", "--set", "body_timeout_s=60")
    head = b"POST /api/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\npartial"
    with running_server(tmp_path, *settings) as server:
        host, port = server.url.removeprefix("http://").split(":")
        busy = []
        for _ in range(5):  # five requests in progress, their bodies unfinished
            _, writer = await asyncio.open_connection(host, int(port))
            writer.write(head)
            busy.append(writer)
        await asyncio.sleep(0.2)
        refused = httpx.get(f"{server.url}/healthz", timeout=HANG_S)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert len(refused.headers["x-request-id"]) == 32
        assert refused.json()["error"] == "too_many_connections"
        for writer in busy:
            writer.close()
        await asyncio.sleep(0.2)
        assert httpx.get(f"{server.url}/healthz", timeout=HANG_S).status_code == 200
