"""``POST /api/classify`` answered by the connection (gre.http.direct_classify), tested as
tests/http/test_protocol_unit.py tests the protocol: a mock transport and loop, bytes in and
bytes out, no sockets and no sleeps; behind it a real Service, Scheduler and replica pool with
a fake replica (tests/fakes.py). The ASGI application behind the protocol is the test's
:class:`App`, which answers ``ok``: a request it sees was not answered directly. The same
requests through gre's ASGI application must get the same answers (the end-to-end tests of
tests/http/test_app.py run through this path on a real server)."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import cv2
import pytest

from gre.config import load_config
from gre.http.app import create_app
from gre.http.direct_classify import ClassifyDirectly
from gre.service import Service
from tests.fakes import FakeReplica
from tests.http.test_protocol_unit import BODY_TIMEOUT_S, DEFAULT_LINES, Harness, MockTransport
from tests.support import shared


def _tiny_jpeg() -> bytes:
    """cat.jpg at 16x16: a request whose decoding costs nothing."""
    image = cv2.imread(str(shared("images/cat.jpg")), cv2.IMREAD_COLOR)
    assert image is not None
    ok, encoded = cv2.imencode(".jpg", cv2.resize(image, (16, 16)))
    assert ok
    return encoded.tobytes()


TINY = _tiny_jpeg()
CAT = shared("images/cat.jpg").read_bytes()
ANSWER = b'[{"confidence":0.75,"label":"sfw"},{"confidence":0.25,"label":"nsfw"}]'


class RecordingTransport(MockTransport):
    """A :class:`MockTransport` that also keeps each write apart and says when one came."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.written = asyncio.Event()

    def write(self, data: bytes) -> None:
        super().write(data)
        self.writes.append(data)
        self.written.set()


@pytest.fixture
async def service() -> AsyncIterator[Service]:
    """A started Service over the default model (labels sfw/nsfw) and one fake replica,
    dispatching at once (no queue delay)."""
    config = load_config(None, {}, {"max_queue_delay_ms": "0", "max_body_bytes": "200000"})
    service = Service(config, replica=FakeReplica)
    FakeReplica.made.clear()
    await service.start()
    yield service
    await service.stop()


def post(body: bytes, *headers: bytes, path: bytes = b"/api/classify") -> bytes:
    """A classify POST of ``body`` with ``headers`` (whole lines, CRLF included)."""
    head = b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
    length = b"Content-Length: %d\r\n" % len(body)
    return head + length + b"".join(headers) + b"\r\n" + body


async def answers(transport: RecordingTransport, count: int = 1) -> list[bytes]:
    """The first ``count`` writes, once they are there (each answer is one write)."""
    while len(transport.writes) < count:
        transport.written.clear()
        await asyncio.wait_for(transport.written.wait(), 5)
    return transport.writes[:count]


def split(raw: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """One raw answer -> its status line, headers (names as sent) and body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    return status, dict(line.split(b": ", 1) for line in lines), body


def direct(service: Service, **limits: Any) -> tuple[Harness, Any, RecordingTransport]:
    server = Harness(direct=ClassifyDirectly(service), **limits)
    transport = RecordingTransport()
    protocol, _ = server.connect(transport)
    return server, protocol, transport


async def test_a_classify_post_is_answered_in_one_write_without_the_application(
    service: Service,
) -> None:
    server, protocol, transport = direct(service)
    protocol.data_received(post(TINY, b"X-Request-Id: r-1\r\n"))
    (raw,) = await answers(transport)
    status, headers, body = split(raw)
    assert status == b"HTTP/1.1 200 OK"
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n" + DEFAULT_LINES)  # uvicorn's date, server
    assert body == ANSWER
    assert headers[b"content-length"] == str(len(ANSWER)).encode()
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"x-request-id"] == b"r-1"
    assert headers[b"server-timing"].startswith(b"queue;dur=")
    assert b"connection" not in headers  # kept alive
    assert not transport.closed
    assert server.app.paths == []  # the ASGI application never saw it
    assert FakeReplica.made[-1].batches == [[TINY]]


async def test_classify_requests_leave_no_reference_cycles(service: Service) -> None:
    # Garbage in a reference cycle waits for the cyclic collector, which walks every young
    # object each time it runs: a cycle per request made that 7 % of the front end's
    # instructions (python -m benchmarks.instructions).
    _, protocol, transport = direct(service)
    protocol.data_received(post(TINY))
    await answers(transport)  # the first request warms caches that live on
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # keep what a collection finds, to name it
    try:
        for count in range(2, 12):
            protocol.data_received(post(TINY))
            await answers(transport, count)
        gc.collect()
        found = sorted({type(o).__qualname__ for o in gc.garbage})
        assert found == [], f"requests left reference cycles of {found}"
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert all(split(raw)[0] == b"HTTP/1.1 200 OK" for raw in transport.writes)


async def test_a_body_in_many_reads_and_a_second_request_on_the_connection(
    service: Service,
) -> None:
    _, protocol, transport = direct(service)
    request = post(CAT)
    for start in range(0, len(request), 65536):  # as the socket hands it over
        protocol.data_received(request[start : start + 65536])
    protocol.data_received(post(TINY, b"X-Request-Id: second\r\n"))
    first, second = await answers(transport, 2)
    assert split(first)[2] == ANSWER
    assert split(second)[1][b"x-request-id"] == b"second"
    assert FakeReplica.made[-1].batches in ([[CAT], [TINY]], [[CAT, TINY]])


async def test_pipelined_requests_are_answered_in_order(service: Service) -> None:
    _, protocol, transport = direct(service)
    protocol.data_received(b"".join(post(TINY, b"X-Request-Id: p-%d\r\n" % i) for i in range(3)))
    raws = await answers(transport, 3)
    assert [split(raw)[1][b"x-request-id"] for raw in raws] == [b"p-0", b"p-1", b"p-2"]


async def test_answers_match_gres_asgi_application(service: Service) -> None:
    """Each request, directly and through create_app's ASGI route: the same status, headers
    (but the durations in Server-Timing) and body."""
    asgi = Harness(app=create_app(service, start_replicas=False))
    requests = [
        post(TINY, b"X-Request-Id: same\r\n"),
        post(TINY, b"X-Request-Id: same\r\n", path=b"/api/classify?top_k=1"),
        post(TINY, b"X-Request-Id: same\r\n", path=b"/api/classify?top_k=9"),
        post(b"not an image", b"X-Request-Id: same\r\n"),
        post(TINY, b"X-Request-Id: same\r\nX-Request-Timeout-Ms: soon\r\n"),
        post(b"x" * 200001, b"X-Request-Id: same\r\n"),
    ]
    for request in requests:
        _, protocol, transport = direct(service)
        protocol.data_received(request)
        (mine,) = await answers(transport)
        other_transport = RecordingTransport()
        other, _ = asgi.connect(other_transport)
        other.data_received(request)
        theirs = b"".join(await answers(other_transport, 2))  # uvicorn: head, then body
        status, headers, body = split(mine)
        their_status, their_headers, their_body = split(theirs)
        assert (status, body) == (their_status, their_body), request[:60]
        assert list(headers) == list(their_headers)
        headers.pop(b"server-timing", None)
        their_headers.pop(b"server-timing", None)
        assert headers == their_headers


async def test_a_declared_length_over_the_limit_is_413_before_the_body_and_keeps_alive(
    service: Service,
) -> None:
    server, protocol, transport = direct(service)
    protocol.data_received(
        b"POST /api/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n"
    )
    (raw,) = await answers(transport)
    status, _, body = split(raw)
    assert status == b"HTTP/1.1 413 Request Entity Too Large"
    assert json.loads(body) == {
        "error": "too_large",
        "message": "the body is 300000 bytes; the limit is 200000",
    }
    protocol.data_received(b"x" * 300000)  # read and dropped
    protocol.data_received(post(TINY))
    assert split((await answers(transport, 2))[1])[2] == ANSWER
    assert server.rejected == []  # the application's refusal, not the protocol's
    assert service.metrics.rejected.labels("too_large")._value.get() == 1


async def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(service: Service) -> None:
    _, protocol, transport = direct(service)
    head = b"POST /api/classify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    protocol.data_received(head + b"%x\r\n" % 150000 + b"x" * 150000 + b"\r\n")
    assert transport.writes == []  # 150000 bytes: under the limit, read on
    protocol.data_received(b"%x\r\n" % 60000 + b"x" * 60000 + b"\r\n")
    (raw,) = await answers(transport)
    assert json.loads(split(raw)[2])["message"] == "the body exceeds the limit of 200000 bytes"
    assert FakeReplica.made[-1].batches == []


async def test_a_client_that_leaves_while_queued_is_dropped_and_logged_499(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    replica = FakeReplica.made[-1]
    gate = replica.gate = threading.Event()
    _, first, first_transport = direct(service)
    first.data_received(post(TINY, b"X-Request-Id: held\r\n"))
    while not replica.started.is_set():  # the fake replica holds the first batch
        await asyncio.sleep(0)
    _, second, second_transport = direct(service)
    with caplog.at_level(logging.INFO, logger="gre.access"):
        second.data_received(post(TINY, b"X-Request-Id: leaves\r\n"))
        second.connection_lost(None)
        gate.set()
        await answers(first_transport)
    assert replica.batches == [[TINY]]  # the second was never dispatched
    assert second_transport.writes == []
    gone = [r for r in caplog.records if getattr(r, "request_id", None) == "leaves"]
    assert [(r.getMessage(), r.status) for r in gone] == [("client disconnected", 499)]  # type: ignore[attr-defined]


async def test_a_body_that_stalls_gets_408_and_the_request_is_logged_499(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    server, protocol, transport = direct(service)
    with caplog.at_level(logging.INFO, logger="gre.access"):
        protocol.data_received(post(TINY, b"X-Request-Id: slow\r\n")[:-10])
        server.loop.fire(protocol, BODY_TIMEOUT_S)
    assert transport.writes[0].startswith(b"HTTP/1.1 408 Request Timeout")
    assert transport.closed
    gone = [r for r in caplog.records if getattr(r, "request_id", None) == "slow"]
    assert [r.status for r in gone] == [499]  # type: ignore[attr-defined]
    assert FakeReplica.made[-1].batches == []


async def test_connection_close_is_answered_then_closed(service: Service) -> None:
    _, protocol, transport = direct(service)
    protocol.data_received(post(TINY, b"Connection: close\r\n"))
    (raw,) = await answers(transport)
    assert split(raw)[1][b"connection"] == b"close"
    assert transport.closed


async def test_other_routes_and_expect_100_continue_go_to_the_application(
    service: Service,
) -> None:
    server, protocol, _ = direct(service)
    protocol.data_received(post(TINY, path=b"/api/features"))
    await server.loop.finish()
    second, _ = server.connect(RecordingTransport())
    second.data_received(post(TINY, b"Expect: 100-continue\r\n"))
    await server.loop.finish()
    assert server.app.paths == ["/api/features", "/api/classify"]


async def test_an_unexpected_exception_is_500_naming_the_request(service: Service) -> None:
    def broken(completed: object) -> bytes:
        raise RuntimeError("secret detail")

    service.answer_json = broken  # type: ignore[method-assign]
    _, protocol, transport = direct(service)
    protocol.data_received(post(TINY, b"X-Request-Id: r-9\r\n"))
    (raw,) = await answers(transport)
    status, headers, body = split(raw)
    assert status == b"HTTP/1.1 500 Internal Server Error"
    assert json.loads(body)["error"] == "internal"
    assert b"secret" not in body
    assert headers[b"x-request-id"] == b"r-9"
    protocol.data_received(post(TINY))  # the connection serves on
    assert split((await answers(transport, 2))[1])[0] == b"HTTP/1.1 500 Internal Server Error"
