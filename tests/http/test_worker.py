"""The HTTP worker's ASGI side of the bridge (gre.http.worker.BridgeApp) in-process: which
message a request crosses as, against a recording bridge. No processes, no sockets;
tests/http/test_workers.py runs the real thing."""

from __future__ import annotations

import asyncio
import itertools
import os
import pickle
import sys
from typing import Any

import pytest
from starlette.types import Message

from gre.http import bridge, worker
from gre.http.body_ring import INLINE_BELOW, RingReader, RingWriter
from gre.http.classify_exchange import Sent, checked_image
from gre.http.protocol import LOST_CONNECTION, LostConnection
from gre.http.worker import BridgeApp, _deliver_all
from tests.http.test_direct_classify import TINY


class RecordingBridge(BridgeApp):
    """A BridgeApp whose messages to the primary are kept in a list."""

    def __init__(self, max_pixels: int | None, ring: RingWriter | None = None) -> None:
        self.max_pixels = max_pixels
        self.ring = ring
        self.requests = {}
        self.sent: list[tuple[Any, ...]] = []
        self._ids = itertools.count()
        self._room = asyncio.Event()

    def write(self, message: tuple[Any, ...]) -> None:
        self.sent.append(message)


def scope(path: str = "/api/classify", method: str = "POST") -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": b"top_k=2",
        "headers": [(b"x-request-id", b"r-1"), (b"content-length", str(len(TINY)).encode())],
    }


async def crossed(app: RecordingBridge, request: dict[str, Any], body: bytes) -> tuple[Any, ...]:
    """Run one request whose ``body`` came whole with its head through ``app``, answer it, and
    return the message it crossed as."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    task = asyncio.create_task(app(request, receive, send))
    while not app.sent and not task.done():  # a failing app must fail the test, not hang it
        await asyncio.sleep(0)
    (message,) = app.sent
    app.deliver((bridge.RESPONSE, message[1], 200, [(b"content-length", b"2")], b"[]"))
    await task
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    return message


async def test_a_whole_classify_request_crosses_read_and_checked() -> None:
    app = RecordingBridge(max_pixels=1_000)
    kind, rid, sent, checked, started, body = await crossed(app, scope(), TINY)
    assert (kind, rid, body) == (bridge.CLASSIFY, 0, TINY)
    assert sent == Sent(request_id="r-1", timeout=None, length=str(len(TINY)), query=b"top_k=2")
    assert checked == checked_image(TINY, 1_000)
    assert checked[1:] == (16, 16)
    assert isinstance(started, float)
    # Plain tuples: the pickle names no class for the primary to look up.
    assert (type(sent), type(checked)) == (tuple, tuple)
    assert b"gre." not in pickle.dumps((kind, rid, sent, checked, started, body))


async def test_the_workers_image_refusal_crosses_as_its_code_and_message() -> None:
    app = RecordingBridge(max_pixels=100)  # 16x16 is 256 pixels
    _, _, _, checked, _, _ = await crossed(app, scope(), TINY)
    code, message = checked
    assert code == "too_large"
    assert "the limit is 100 pixels" in message


async def test_other_requests_and_a_worker_told_not_to_check_send_the_head() -> None:
    for app, request in [
        (RecordingBridge(max_pixels=1_000), scope(path="/api/features")),
        (RecordingBridge(max_pixels=1_000), scope(method="PUT")),
        (RecordingBridge(max_pixels=None), scope()),
    ]:
        kind, _, portable, body, more = await crossed(app, request, TINY)
        assert (kind, body, more) == (bridge.HEAD, TINY, False)
        assert portable["path"] == request["path"]


async def test_an_image_check_that_fails_unforeseen_leaves_the_request_to_the_primary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(body: bytes, max_pixels: int) -> None:
        raise RuntimeError("a bug in the image check")

    monkeypatch.setattr(worker, "checked_image", broken)
    kind, _, portable, body, more = await crossed(RecordingBridge(max_pixels=1_000), scope(), TINY)
    assert (kind, body, more) == (bridge.HEAD, TINY, False)
    assert portable["path"] == "/api/classify"


async def test_a_large_body_waits_for_room_in_the_ring_then_crosses_there() -> None:
    """A body the ring holds never crosses inline: with no room it waits until the primary
    says it has read further (inline, a burst of large photos held copies of each in both
    processes' buffers); one larger than the ring crosses inline."""
    reader = RingReader(2 * INLINE_BELOW + 100)
    assert reader.fd is not None
    app = RecordingBridge(max_pixels=1_000, ring=RingWriter(os.dup(reader.fd)))
    photo = TINY + bytes(INLINE_BELOW)
    *_, first = await crossed(app, scope(), photo)
    app.sent.clear()
    second = asyncio.create_task(crossed(app, scope(), photo))  # no room for it yet
    for _ in range(5):
        await asyncio.sleep(0)
    assert app.sent == []
    assert not second.done()
    assert first == (0, len(photo))
    assert reader.take(*first) == photo
    assert not _deliver_all([(bridge.TAKEN, reader.position)], app)
    *_, again = await second
    assert again == (reader.size, len(photo))  # past the end: at offset 0, once freed
    assert reader.take(*again) == photo
    assert not _deliver_all([(bridge.TAKEN, reader.position)], app)
    app.sent.clear()
    huge = TINY + bytes(reader.size)
    *_, inline = await crossed(app, scope(), huge)
    assert inline == huge
    reader.close()


async def test_a_classify_body_still_coming_crosses_whole_when_the_primary_fetches_it() -> None:
    """Its head first, with none of the body (the primary admits it before the upload); at
    FETCH the worker reads the rest, checks the whole and sends it (WHOLE)."""
    app = RecordingBridge(max_pixels=1_000)
    pieces = [TINY[:100], TINY[100:500], TINY[500:]]
    chunks = [{"type": "http.request", "body": p, "more_body": i < 2} for i, p in enumerate(pieces)]
    sent: list[Message] = []

    async def receive() -> Message:
        return chunks.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    task = asyncio.create_task(app(scope(), receive, send))
    while not app.sent and not task.done():
        await asyncio.sleep(0)
    ((kind, rid, _, body, more),) = app.sent
    assert (kind, body, more) == (bridge.HEAD, b"", True)
    assert len(chunks) == 2  # the first piece arrived with the head and waits in the worker
    app.deliver((bridge.FETCH, rid))
    while len(app.sent) < 2 and not task.done():
        await asyncio.sleep(0)
    assert app.sent[1] == (bridge.WHOLE, rid, checked_image(TINY, 1_000), TINY)
    assert type(app.sent[1][2]) is tuple
    app.deliver((bridge.RESPONSE, rid, 200, [(b"content-length", b"2")], b"[]"))
    await task
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]


class CopyingBridge(RecordingBridge):
    """A RecordingBridge that keeps what crossed, not the worker's own objects: the real
    bridge pickles each message (gre.replicas.wire.FrameWriter)."""

    def write(self, message: tuple[Any, ...]) -> None:
        self.sent.append(pickle.loads(pickle.dumps(message)))


@pytest.mark.parametrize("whole", [True, False], ids=["with-head", "fetched"])
async def test_once_the_body_has_crossed_the_worker_holds_none_of_it(whole: bool) -> None:
    """While the primary has the request (queued, batched), the worker awaits its answer and
    holds no piece of its body: the primary's copy is the only one (with 2 workers, pieces
    kept until the answer grew the tree +574 MiB where the budget allows 320)."""
    app = CopyingBridge(max_pixels=1_000)
    pieces = [TINY] if whole else [TINY[:100], TINY[100:500], TINY[500:]]
    held = [sys.getrefcount(piece) for piece in pieces]  # this test's own references
    chunks = [
        {"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1}
        for i, piece in enumerate(pieces)
    ]

    async def receive() -> Message:
        return chunks.pop(0)

    async def send(message: Message) -> None:
        pass

    task = asyncio.create_task(app(scope(), receive, send))
    while not app.sent and not task.done():
        await asyncio.sleep(0)
    rid = app.sent[0][1]
    if not whole:
        app.deliver((bridge.FETCH, rid))
        while len(app.sent) < 2 and not task.done():
            await asyncio.sleep(0)
    assert app.sent[-1][0] == (bridge.CLASSIFY if whole else bridge.WHOLE)
    assert app.sent[-1][-1] == TINY  # inline: what crossed is the primary's copy
    assert not chunks
    await asyncio.sleep(0)  # the worker is waiting for the answer now
    assert [sys.getrefcount(piece) for piece in pieces] == held
    app.deliver((bridge.RESPONSE, rid, 200, [(b"content-length", b"2")], b"[]"))
    await task


async def test_a_client_that_leaves_while_its_body_is_fetched_is_gone() -> None:
    app = RecordingBridge(max_pixels=1_000)
    chunks: list[Message] = [
        {"type": "http.request", "body": TINY[:100], "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        return chunks.pop(0)

    async def send(message: Message) -> None:
        raise AssertionError("nothing is answered to a client that left")

    task = asyncio.create_task(app(scope(), receive, send))
    while not app.sent and not task.done():
        await asyncio.sleep(0)
    rid = app.sent[0][1]
    app.deliver((bridge.FETCH, rid))
    while len(app.sent) < 2 and not task.done():
        await asyncio.sleep(0)
    assert app.sent[1] == (bridge.GONE, rid)
    app.deliver((bridge.GONE, rid))  # what the worker's bridge says once nobody will answer
    await task


async def test_a_client_that_leaves_while_the_primary_has_its_request_ends_it_here() -> None:
    """The primary answers nothing to a client gone, and uvicorn lets the request's task run
    on: the worker ends it itself, and forgets it, when the connection is lost."""
    app = RecordingBridge(max_pixels=1_000)
    watch = LostConnection()
    request = dict(scope(), extensions={LOST_CONNECTION: watch})

    async def receive() -> Message:
        return {"type": "http.request", "body": TINY, "more_body": False}

    async def send(message: Message) -> None:
        raise AssertionError("nothing is answered to a client that left")

    task = asyncio.create_task(app(request, receive, send))
    while not app.sent and not task.done():
        await asyncio.sleep(0)
    rid = app.sent[0][1]
    watch.fire()
    await asyncio.wait_for(task, timeout=5)
    assert app.sent[1:] == [(bridge.GONE, rid)]
    assert app.requests == {}
