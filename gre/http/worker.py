"""An HTTP worker process (``server.workers > 1``): listens on the service's port beside the
other workers (``SO_REUSEPORT``), parses HTTP with uvicorn and gre's connection protocol, and
hands every request to the primary over a socketpair (:mod:`gre.http.bridge`), which runs
gre's application for it; a classify request's 200 comes back as its prediction, and the
worker makes the answer's bytes (:mod:`gre.http.bridge_answers`).

``python -c "from gre.http.worker import main; main()" BRIDGE_FD [RING_FD]`` (started by
:class:`gre.http.front_ends.FrontEnds`); the first message on the bridge is its
:class:`WorkerSpec`. It exits when the primary says ``STOP`` (after the drain) or when the
bridge closes (the primary is gone); SIGINT, SIGTERM and SIGHUP are the primary's to act on,
as for replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import uvicorn
import uvloop
from starlette.types import Message, Receive, Scope, Send

from gre.heap import freeze_startup_objects
from gre.http import bridge
from gre.http.body_ring import RingWriter
from gre.http.bridge_answers import AnswerBook
from gre.http.budget import BodyBudget
from gre.http.classify_exchange import Checked, checked_image, sent_of
from gre.http.direct_classify import takes
from gre.http.protocol import (
    BODY_READY,
    LOST_CONNECTION,
    WHOLE_ANSWER,
    Limits,
    LostConnection,
    limited_protocol,
)
from gre.logs import configure_logging
from gre.malloc_thresholds import return_large_bodies
from gre.replicas import wire

log = logging.getLogger("gre.http.worker")

#: How often a worker reports its body budget's holding when it changed, s.
HELD_EVERY_S = 0.5


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs of ``[server]``; its body budget and connection limit are its
    shares of ``max_inflight_body_bytes`` and ``max_connections``. Given ``max_pixels`` (px),
    it reads each classify request's head and checks its whole body itself (bridge
    ``CLASSIFY``, or ``HEAD`` then ``WHOLE`` at ``FETCH``)."""

    index: int
    host: str
    port: int
    log_level: str
    header_timeout_s: float
    body_timeout_s: float
    max_header_bytes: int
    max_connections: int
    max_body_bytes: int
    budget_bytes: int
    keep_alive_timeout_s: int
    backlog: int
    max_pixels: int | None = None


class _Mailbox:
    """Messages from the primary for one request, waited for by its ASGI task, and what
    arrived of its body with the head while the primary has yet to fetch the rest."""

    __slots__ = ("kept", "messages", "waiter")

    def __init__(self) -> None:
        self.messages: deque[tuple[Any, ...]] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.kept = b""

    def take_kept(self) -> bytes:
        """What arrived of the body with the head, no longer kept here."""
        kept, self.kept = self.kept, b""
        return kept

    def put(self, message: tuple[Any, ...]) -> None:
        self.messages.append(message)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def get(self) -> tuple[Any, ...]:
        while not self.messages:
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        return self.messages.popleft()


class BridgeApp:
    """The worker's ASGI application: each HTTP request goes to the primary and its answer
    comes back; the primary pulls the body chunk by chunk (``MORE``). Given ``max_pixels``
    (px), a classify request's head is read and its whole body's image checked here, work
    that runs on every worker's core instead of the primary's one: it crosses as
    ``CLASSIFY`` when its body came whole with its head, else its head first (for admission,
    before the upload) and its whole body when the primary asks for it (``FETCH``, then
    ``WHOLE``); each body through ``ring`` when given and it fits."""

    def __init__(
        self,
        writer: asyncio.StreamWriter,
        max_pixels: int | None = None,
        ring: RingWriter | None = None,
    ) -> None:
        self.max_pixels = max_pixels
        self.ring = ring
        self.frames = wire.FrameWriter(writer)
        self.requests: dict[int, _Mailbox] = {}
        self.answers = AnswerBook()
        self._ids = itertools.count()
        self._room = asyncio.Event()  # set (and replaced) when the primary frees ring room

    def write(self, message: tuple[Any, ...]) -> None:
        """Send one message to the primary, with the others of this event-loop iteration
        (dropped once the bridge is closed)."""
        self.frames.send(message)

    def deliver(self, message: tuple[Any, ...]) -> None:
        """A message from the primary for one of this worker's requests."""
        mailbox = self.requests.get(message[1])
        if mailbox is not None:
            mailbox.put(message)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is the primary's; no WebSockets
        started = time.perf_counter()
        ready = scope.get("extensions", {}).get(BODY_READY)
        if ready is None or ready():
            first = await receive()  # at once: what has arrived rides with the head
            if first["type"] == "http.disconnect":
                return
            body, more = first.pop("body", b""), first.get("more_body", False)
        else:
            # Nothing of the body yet: hand the head on now, so the primary can refuse it
            # (a full queue) before the upload, as one process does; it pulls the body.
            body, more = b"", True
        rid = next(self._ids)
        mailbox = self.requests[rid] = _Mailbox()
        extensions = scope.get("extensions", {})
        watch = extensions.get(LOST_CONNECTION)
        if isinstance(watch, LostConnection):
            watch.callback = lambda: self._lost(rid)
        if self.max_pixels is not None and takes(scope):
            if not more:
                self.write(await self._classify(rid, scope, body, started))
            else:
                mailbox.kept = body  # a classify body crosses whole, once fetched
                self.write((bridge.HEAD, rid, bridge.portable_scope(scope), b"", True))
        else:
            self.write((bridge.HEAD, rid, bridge.portable_scope(scope), body, more))
        # The body is the primary's now (or the ring's, or the mailbox's until FETCH): kept
        # here until the answer as well, the worker would hold every body twice over.
        body = b""
        try:
            await self._relay(rid, mailbox, receive, send, extensions.get(WHOLE_ANSWER))
        finally:
            del self.requests[rid]
            if isinstance(watch, LostConnection):
                watch.callback = None

    def _lost(self, rid: int) -> None:
        """The request's client left: tell the primary, and end the request here (uvicorn
        lets its task run on, and the primary answers nothing to a client gone)."""
        self.write((bridge.GONE, rid))
        self.deliver((bridge.GONE, rid))

    async def _classify(
        self, rid: int, scope: Scope, body: bytes, started: float
    ) -> tuple[Any, ...]:
        """A whole classify request's message: ``CLASSIFY`` (its body in the ring when it
        goes there), or ``HEAD`` should the image check fail unforeseen."""
        checked = self._checked(body)
        if checked is None:
            return (bridge.HEAD, rid, bridge.portable_scope(scope), body, False)
        sent = tuple(sent_of(scope["headers"], scope["query_string"]))
        return (bridge.CLASSIFY, rid, sent, tuple(checked), started, await self._carried(body))

    async def _whole(self, rid: int, body: bytes) -> tuple[Any, ...]:
        """``(WHOLE, id, checked, body)`` for a body the primary fetched."""
        checked = self._checked(body)
        plain = None if checked is None else tuple(checked)
        return (bridge.WHOLE, rid, plain, await self._carried(body))

    def _checked(self, body: bytes) -> Checked | None:
        """:func:`checked_image` of ``body``; ``None`` should the check fail unforeseen (a
        bug, not an ``ImageError``): the primary then checks it again and answers its 500,
        logged and counted as in one process."""
        assert self.max_pixels is not None, "only a worker given max_pixels checks images"
        try:
            return checked_image(body, self.max_pixels)
        except Exception:
            return None

    async def _carried(self, body: bytes) -> bytes | tuple[int, int]:
        """How ``body`` crosses: its place in the ring, once there is room for it there, or
        itself (no ring, or a body the ring does not hold). The caller writes the message
        before it next awaits, so bodies cross in the order they were put."""
        ring = self.ring
        if ring is None or not ring.holds(len(body)):
            return body
        while (place := ring.put(body)) is None:
            # Inline, its pickle and the bridge's buffers held copies in both processes (a
            # burst of 3.3 MiB photos, 2 workers: most of them, past the budget); waiting
            # costs no memory, the body being this worker's until it crosses anyway.
            await self._room.wait()
        return place

    def taken(self, position: int) -> None:
        """The primary has read this worker's ring up to ``position``: bodies waiting for
        room try again."""
        if self.ring is not None:
            self.ring.taken(position)
        self._room.set()
        self._room = asyncio.Event()

    async def _relay(
        self,
        rid: int,
        mailbox: _Mailbox,
        receive: Receive,
        send: Send,
        whole: Callable[[int, list[tuple[bytes, bytes]], bytes], bool] | None,
    ) -> None:
        while True:
            message = await mailbox.get()
            kind = message[0]
            if kind == bridge.FETCH:
                await self._fetched(rid, receive, mailbox.take_kept())
            elif kind == bridge.MORE:
                chunk = await receive()
                if chunk["type"] == "http.disconnect":
                    self.write((bridge.GONE, rid))
                else:
                    body, more = chunk.get("body", b""), chunk.get("more_body", False)
                    self.write((bridge.BODY, rid, body, more))
            elif kind == bridge.RESPONSE:
                _, _, status, headers, body = message
                if whole is not None and whole(status, headers, body):
                    return  # in one write, as the primary's own connections answer
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            elif kind == bridge.START:
                _, _, status, headers = message
                await send({"type": "http.response.start", "status": status, "headers": headers})
            elif kind == bridge.CHUNK:
                _, _, body, more = message
                await send({"type": "http.response.body", "body": body, "more_body": more})
                if not more:
                    return
            elif kind == bridge.GONE:  # the client left, or the bridge closed: no answer
                return

    async def _fetched(self, rid: int, receive: Receive, kept: bytes) -> None:
        """Read the rest of a body that began with ``kept`` and send it ``WHOLE`` (or
        ``GONE``, its client having left). Its chunks go when this returns: the primary
        holds the body from here on. Kept until the answer, they held every fetched body in
        both processes (a burst of 3.3 MiB photos with 2 workers: the tree grew +574 MiB,
        +395 MiB without)."""
        chunks = [kept]
        while True:
            chunk: Message = await receive()
            if chunk["type"] == "http.disconnect":
                self.write((bridge.GONE, rid))
                return
            chunks.append(chunk.get("body", b""))
            if not chunk.get("more_body", False):
                body = b"".join(chunks)
                chunks.clear()  # one copy, should it wait for room in the ring
                self.write(await self._whole(rid, body))
                return


class WorkerServer(uvicorn.Server):
    """Uvicorn on the worker's socket, with the signals left to the primary; tells the
    primary once it accepts connections."""

    def __init__(self, config: uvicorn.Config, app: BridgeApp) -> None:
        super().__init__(config)
        self.bridge_app = app

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        freeze_startup_objects("HTTP worker")
        self.bridge_app.write((bridge.LISTENING,))


async def _read_primary(reader: asyncio.StreamReader, app: BridgeApp, server: WorkerServer) -> None:
    frames = wire.FrameReader(reader)
    try:
        while True:
            if _deliver_all(await frames.read(), app):
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        log.warning("the primary is gone: exiting")
        for rid in list(app.requests):
            app.deliver((bridge.GONE, rid))
    server.should_exit = True


def _deliver_all(messages: list[Any], app: BridgeApp) -> bool:
    """Deliver ``messages`` in order; ``True`` at ``STOP`` (what follows it is dropped)."""
    for message in messages:
        kind = message[0]
        if kind == bridge.STOP:
            return True
        if kind == bridge.TAKEN:
            app.taken(message[1])
        elif kind == bridge.LABELS:
            app.answers.learn(message)
        elif kind == bridge.ANSWER:
            if message[1] in app.requests:  # else its client left: no bytes to make
                app.deliver(app.answers.response(message))
        else:
            app.deliver(message)
    return False


async def _report_held(app: BridgeApp, budget: BodyBudget) -> None:
    last = 0
    while True:
        await asyncio.sleep(HELD_EVERY_S)
        if budget.held != last:
            last = budget.held
            app.write((bridge.HELD, last))


async def serve(bridge_socket: socket.socket, ring: RingWriter | None = None) -> None:
    """Listen on the spec's address and serve until the primary says stop or goes away;
    ``ring``: the body ring the primary made for this process, if any."""
    reader, writer = await asyncio.open_connection(sock=bridge_socket)
    spec: WorkerSpec = await wire.read(reader)
    configure_logging(spec.log_level)
    listen = bridge.port_socket(spec.host, spec.port)
    listen.listen(spec.backlog)
    app = BridgeApp(writer, spec.max_pixels, ring)
    budget = BodyBudget(spec.budget_bytes)
    limits = Limits(
        header_timeout_s=spec.header_timeout_s,
        body_timeout_s=spec.body_timeout_s,
        max_header_bytes=spec.max_header_bytes,
        max_connections=spec.max_connections,
        max_body_bytes=spec.max_body_bytes,
        budget=budget,
        on_reject=lambda reason: app.write((bridge.REJECTED, reason)),
    )
    config = uvicorn.Config(
        app,
        http=limited_protocol(limits, whole_answers=True),
        ws="none",
        loop="none",
        lifespan="off",
        access_log=False,
        log_level=spec.log_level,
        log_config=None,
        timeout_keep_alive=spec.keep_alive_timeout_s,
        limit_concurrency=None,
        backlog=spec.backlog,
    )
    server = WorkerServer(config, app)
    tasks = [
        asyncio.create_task(_read_primary(reader, app, server)),
        asyncio.create_task(_report_held(app, budget)),
    ]
    try:
        await server.serve(sockets=[listen])  # WorkerServer.startup says LISTENING
    finally:
        for task in tasks:
            task.cancel()
        app.frames.flush()
        writer.close()


def main() -> None:
    """Entry point: ``argv[1]`` the bridge socket's descriptor, ``argv[2]`` (optional) the
    body ring's."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the primary drains, then says STOP
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload is the primary's
    return_large_bodies()  # what it has passed on is the main process's to hold
    ring = RingWriter(int(sys.argv[2])) if len(sys.argv) > 2 else None
    uvloop.run(serve(socket.socket(fileno=int(sys.argv[1])), ring))
