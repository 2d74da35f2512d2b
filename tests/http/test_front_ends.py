"""The primary's half of the worker bridge in-process: a bridged request's ``receive`` and
``send`` against a worker stand-in that records what would cross the socketpair. No
processes, no sockets, no sleeps (the classify tests yield to a real Service and a fake
replica); tests/http/test_workers.py runs the real thing."""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send

from gre.config import load_config
from gre.http import bridge
from gre.http.body_ring import INLINE_BELOW, RingReader, RingWriter
from gre.http.bridge_answers import AnswerBook
from gre.http.classify_exchange import Sent, checked_image
from gre.http.front_ends import BridgedRequest, FrontEnds, WorkerProcess
from gre.messages import ItemError, Prediction
from gre.replicas import wire
from gre.service import Service
from tests.fakes import FakeReplica
from tests.http.test_direct_classify import TINY


class RecordingWorker(WorkerProcess):
    """A worker whose bridge is a list of the messages the primary wrote."""

    def __init__(self) -> None:
        super().__init__(0)
        self.sent: list[tuple[Any, ...]] = []

    def write(self, message: tuple[Any, ...]) -> None:
        self.sent.append(message)

    @property
    def delivered(self) -> list[tuple[Any, ...]]:
        """What the worker's requests get of :attr:`sent`: each ``ANSWER`` as the
        ``RESPONSE`` the worker makes of it, with the ``LABELS`` sent before it."""
        book, out = AnswerBook(), []
        for message in self.sent:
            if message[0] == bridge.LABELS:
                book.learn(message)
            else:
                out.append(book.response(message) if message[0] == bridge.ANSWER else message)
        return out


def bridged(body: bytes, more: bool) -> tuple[RecordingWorker, BridgedRequest]:
    worker = RecordingWorker()
    chunk = {"type": "http.request", "body": body, "more_body": more}
    request = BridgedRequest(worker, 7, deque([chunk]), more)
    worker.requests[7] = request
    return worker, request


async def test_a_whole_body_is_read_without_asking_and_a_whole_answer_is_one_message() -> None:
    worker, request = bridged(b"image", more=False)
    assert await request.receive() == {"type": "http.request", "body": b"image", "more_body": False}
    headers = [(b"content-type", b"application/json")]
    await request.send({"type": "http.response.start", "status": 200, "headers": headers})
    assert worker.sent == []  # the start waits for the body
    await request.send({"type": "http.response.body", "body": b"[]"})
    assert worker.sent == [(bridge.RESPONSE, 7, 200, headers, b"[]")]
    assert request.done
    assert await request.receive() == {"type": "http.disconnect"}  # answered: the cycle ends
    await request.send({"type": "http.response.body", "body": b"late"})
    assert len(worker.sent) == 1  # nothing after the end


async def test_the_rest_of_a_body_is_pulled_once_per_chunk_as_the_app_reads() -> None:
    worker, request = bridged(b"ab", more=True)
    assert (await request.receive())["body"] == b"ab"
    assert worker.sent == []  # nothing asked before the app wants more
    reading = asyncio.ensure_future(request.receive())
    await asyncio.sleep(0)
    assert worker.sent == [(bridge.MORE, 7)]
    # What FrontEnds._read does with the worker's BODY reply:
    request.chunks.append({"type": "http.request", "body": b"cd", "more_body": False})
    request.more_body, request.asked = False, False
    request.wake()
    assert (await reading)["body"] == b"cd"
    assert worker.sent == [(bridge.MORE, 7)]  # asked once


async def test_a_streamed_answer_is_a_start_then_its_chunks() -> None:
    worker, request = bridged(b"", more=False)
    await request.send({"type": "http.response.start", "status": 200, "headers": []})
    await request.send({"type": "http.response.body", "body": b"<ht", "more_body": True})
    await request.send({"type": "http.response.body", "body": b"ml>", "more_body": False})
    assert worker.sent == [
        (bridge.START, 7, 200, []),
        (bridge.CHUNK, 7, b"<ht", True),
        (bridge.CHUNK, 7, b"ml>", False),
    ]
    assert request.done


async def test_a_lost_client_reads_as_a_disconnect_and_calls_its_watch_back() -> None:
    worker, request = bridged(b"ab", more=True)
    await request.receive()
    called: list[str] = []
    request.watch.callback = lambda: called.append("lost")
    reading = asyncio.ensure_future(request.receive())
    await asyncio.sleep(0)
    request.lost()  # GONE from the worker, or the worker died
    assert await reading == {"type": "http.disconnect"}
    assert await request.receive() == {"type": "http.disconnect"}  # and from then on
    assert called == ["lost"]
    assert worker.sent == [(bridge.MORE, 7)]


@pytest.fixture
async def service() -> AsyncIterator[Service]:
    """A started Service over the default model and one fake replica, no queue delay."""
    config = load_config(None, {}, {"max_queue_delay_ms": "0"})
    service = Service(config, replica=FakeReplica)
    FakeReplica.made.clear()
    await service.start()
    yield service
    await service.stop()


SENT = Sent(request_id="bridged", timeout=None, length=None, query=b"top_k=1")


async def test_a_whole_classify_request_is_answered_by_callback_in_one_message(
    service: Service,
) -> None:
    """FrontEnds._classify: no ASGI task; the answer crosses as one RESPONSE and the request
    leaves the worker's table."""
    worker, request = bridged(TINY, more=False)
    FrontEnds._classify(service, request, SENT, TINY)
    while not worker.sent:
        await asyncio.sleep(0)
    ((kind, rid, status, headers, body),) = worker.delivered
    assert (kind, rid, status) == (bridge.RESPONSE, 7, 200)
    assert body == b'[{"confidence":0.75,"label":"sfw"}]'
    assert (b"x-request-id", b"bridged") in headers
    assert worker.requests == {}
    assert request.done


async def test_a_bridged_classify_request_whose_client_left_is_dropped(service: Service) -> None:
    replica = FakeReplica.made[-1]
    replica.gate = threading.Event()  # the first request holds the only replica
    held_worker, held = bridged(TINY, more=False)
    FrontEnds._classify(service, held, SENT, TINY)
    while not replica.started.is_set():
        await asyncio.sleep(0)
    worker, request = bridged(TINY, more=False)
    FrontEnds._classify(service, request, SENT, TINY)
    request.lost()  # the worker said GONE
    replica.gate.set()
    while not held_worker.sent:
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert worker.sent == []
    assert worker.requests == {}
    assert replica.batches == [[TINY]]  # the one that left never ran


async def answered(worker: RecordingWorker) -> tuple[Any, ...]:
    """The one message the primary wrote to ``worker``, once it has."""
    while not worker.sent:
        await asyncio.sleep(0)
    (message,) = worker.delivered
    return message


async def no_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("a CLASSIFY message reached the ASGI application")


def front_ends(service: Service) -> tuple[FrontEnds, RecordingWorker]:
    """The primary's bridge for ``service``, and a worker stand-in of it."""
    ends = FrontEnds(service.config.server, no_app, service.metrics, service)
    worker = RecordingWorker()
    worker.handed = service.metrics.worker_requests.labels("0")
    return ends, worker


async def test_a_classify_message_is_queued_with_the_workers_image_check(service: Service) -> None:
    """CLASSIFY: the worker read the head and checked the image; the primary admits, queues
    and answers it, its duration counted from when the worker had the head."""
    ends, worker = front_ends(service)
    started = time.perf_counter() - 5.0
    checked = checked_image(TINY, service.config.server.max_pixels)
    message = (bridge.CLASSIFY, 3, tuple(SENT), tuple(checked), started, TINY)  # as it crosses
    ends._handle(worker, message, asyncio.Event())
    kind, rid, status, headers, body = await answered(worker)
    assert (kind, rid, status) == (bridge.RESPONSE, 3, 200)
    assert body == b'[{"confidence":0.75,"label":"sfw"}]'
    assert (b"x-request-id", b"bridged") in headers
    assert FakeReplica.made[-1].batches == [[TINY]]
    assert worker.requests == {}
    (durations,) = service.metrics.request_duration.collect()
    assert next(s.value for s in durations.samples if s.name.endswith("_sum")) >= 5.0


async def test_a_classify_message_the_worker_refused_is_answered_without_queueing(
    service: Service,
) -> None:
    """The primary answers the worker's image refusal as its own check would, and the
    image never reaches a replica."""
    ends, worker = front_ends(service)
    checked = checked_image(b"GIF89a", service.config.server.max_pixels)
    assert checked == ("unsupported_format", str(checked[1]))
    message = (bridge.CLASSIFY, 4, tuple(SENT), checked, time.perf_counter(), b"GIF89a")
    ends._handle(worker, message, asyncio.Event())
    kind, rid, status, headers, body = await answered(worker)
    assert (kind, rid, status) == (bridge.RESPONSE, 4, 415)
    assert b'"error":"unsupported_format"' in body
    assert (b"x-request-id", b"bridged") in headers
    assert FakeReplica.made[-1].batches == []


async def test_a_classify_message_is_refused_by_top_k_before_its_image(service: Service) -> None:
    """The exchange's order holds across the bridge: a bad top_k is refused (422) before the
    image's refusal, as in one process."""
    ends, worker = front_ends(service)
    sent = tuple(SENT._replace(query=b"top_k=0"))
    message = (bridge.CLASSIFY, 5, sent, ("bad_image", "not an image"), time.perf_counter(), b"x")
    ends._handle(worker, message, asyncio.Event())
    _, _, status, _, body = await answered(worker)
    assert status == 422
    assert b'"error":"bad_top_k"' in body


class OneRead(wire.FrameReader):
    """A bridge that brings ``messages`` in one read, then closes."""

    def __init__(self, messages: list[tuple[Any, ...]]) -> None:  # no stream under it
        self.messages: list[tuple[Any, ...]] | None = messages

    async def read(self) -> list[tuple[Any, ...]]:
        messages, self.messages = self.messages, None
        if messages is None:
            raise asyncio.IncompleteReadError(b"", None)
        return messages


#: A body large enough for the ring (a JPEG's bytes after its end are ignored).
PHOTO = TINY + bytes(INLINE_BELOW)

Ringed = tuple[FrontEnds, RecordingWorker, RingWriter]


@pytest.fixture
def ringed(service: Service) -> Iterator[Ringed]:
    """The primary's bridge, a worker stand-in with a body ring of 4 x INLINE_BELOW bytes,
    and the worker's side of that ring."""
    ends, worker = front_ends(service)
    ring = worker.ring = RingReader(4 * INLINE_BELOW)
    assert ring.fd is not None
    writer = RingWriter(os.dup(ring.fd))
    yield ends, worker, writer
    ring.close()
    writer.close()


async def test_bodies_in_the_ring_are_taken_as_read_and_the_worker_told_once_per_read(
    service: Service, ringed: Ringed
) -> None:
    ends, worker, writer = ringed
    messages = []
    for rid in (1, 2):
        place = writer.put(PHOTO)
        assert place is not None
        checked = checked_image(PHOTO, service.config.server.max_pixels)
        messages.append(
            (bridge.CLASSIFY, rid, tuple(SENT), tuple(checked), time.perf_counter(), place)
        )
    await ends._read(worker, OneRead(messages), asyncio.Event())
    assert worker.sent == [(bridge.TAKEN, 2 * len(PHOTO))]  # before any answer
    while len(worker.sent) < 4:  # and the labels, once
        await asyncio.sleep(0)
    assert [m[:3] for m in worker.delivered[1:]] == [
        (bridge.RESPONSE, 1, 200),
        (bridge.RESPONSE, 2, 200),
    ]
    # Both answers as their predictions, the model's labels sent before the first only.
    assert [m[0] for m in worker.sent[1:]] == [bridge.LABELS, bridge.ANSWER, bridge.ANSWER]
    assert FakeReplica.made[-1].batches == [[PHOTO, PHOTO]]


HEAD_SCOPE = {
    "type": "http",
    "method": "POST",
    "path": "/api/classify",
    "query_string": b"top_k=1",
    "headers": [(b"x-request-id", b"bridged")],
}


async def test_a_classify_head_is_admitted_then_its_whole_body_fetched(service: Service) -> None:
    ends, worker = front_ends(service)
    listening = asyncio.Event()
    ends._handle(worker, (bridge.HEAD, 8, dict(HEAD_SCOPE), b"", True), listening)
    assert worker.sent == [(bridge.FETCH, 8)]  # admitted: the upload may begin
    checked = checked_image(TINY, service.config.server.max_pixels)
    ends._handle(worker, (bridge.WHOLE, 8, tuple(checked), TINY), listening)
    while len(worker.sent) < 3:
        await asyncio.sleep(0)
    kind, rid, status, _, body = worker.delivered[1]
    assert (kind, rid, status) == (bridge.RESPONSE, 8, 200)
    assert body == b'[{"confidence":0.75,"label":"sfw"}]'
    assert worker.requests == {}


async def test_a_classify_head_refused_before_the_upload_is_not_fetched(service: Service) -> None:
    ends, worker = front_ends(service)
    refused = dict(HEAD_SCOPE, query_string=b"top_k=0")
    ends._handle(worker, (bridge.HEAD, 9, refused, b"", True), asyncio.Event())
    ((kind, rid, status, _, body),) = worker.sent
    assert (kind, rid, status) == (bridge.RESPONSE, 9, 422)
    assert b'"error":"bad_top_k"' in body
    assert worker.requests == {}


async def test_a_fetched_body_whose_client_left_is_still_taken_from_the_ring(
    ringed: Ringed,
) -> None:
    ends, worker, writer = ringed
    listening = asyncio.Event()
    ends._handle(worker, (bridge.HEAD, 10, dict(HEAD_SCOPE), b"", True), listening)
    ends._handle(worker, (bridge.GONE, 10), listening)
    assert worker.requests == {}
    place = writer.put(PHOTO)
    assert place is not None
    ends._handle(worker, (bridge.WHOLE, 10, ("bad_image", "unused"), place), listening)
    assert worker.ring is not None
    assert worker.ring.position == len(PHOTO)  # the ring moves on past it
    assert worker.sent == [(bridge.FETCH, 10)]  # and nothing is answered
    assert FakeReplica.made[-1].batches == []


async def classified_tiny(service: Service, rid: int) -> tuple[RecordingWorker, tuple[Any, ...]]:
    """The tiny JPEG as a worker's CLASSIFY ``rid``, through the primary: the worker
    stand-in, and the answer the worker makes of what it was sent."""
    ends, worker = front_ends(service)
    checked = checked_image(TINY, service.config.server.max_pixels)
    message = (bridge.CLASSIFY, rid, tuple(SENT), tuple(checked), time.perf_counter(), TINY)
    ends._handle(worker, message, asyncio.Event())
    return worker, await answered(worker)


async def test_an_answer_with_no_json_for_it_is_the_primarys_500(service: Service) -> None:
    """A confidence that is NaN crosses as no prediction: the primary's encoding fails and it
    answers 500 ``internal`` itself, as in one process."""
    FakeReplica.made[-1].answer = lambda image, k: Prediction((0,), (math.nan,))
    worker, (kind, rid, status, _, body) = await classified_tiny(service, 11)
    assert (kind, rid, status) == (bridge.RESPONSE, 11, 500)
    assert b'"error":"internal"' in body
    assert [m[0] for m in worker.sent] == [bridge.RESPONSE]


async def test_a_replicas_refusal_of_the_image_crosses_whole(service: Service) -> None:
    FakeReplica.made[-1].answer = lambda image, k: ItemError("bad_image", "cannot decode it")
    worker, (kind, rid, status, _, body) = await classified_tiny(service, 12)
    assert (kind, rid, status) == (bridge.RESPONSE, 12, 400)
    assert b"cannot decode it" in body
    assert [m[0] for m in worker.sent] == [bridge.RESPONSE]
    assert worker.requests == {}
