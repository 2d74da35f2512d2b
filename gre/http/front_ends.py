"""The primary's side of ``server.workers > 1``: N HTTP worker processes
(:mod:`gre.http.worker`) listening on one port (``SO_REUSEPORT``: the kernel spreads new
connections evenly over their sockets; one socket shared by all let one worker take twice
the other's connections here), each bridged to this process (:mod:`gre.http.bridge`), where
gre's application serves every request. This process holds the port bound but not listening,
so that it stays gre's while a worker is replaced, and ``port = 0`` picks one port for all.

Why this shape: HTTP parsing is most of the front end's CPU per request, and it parallelises;
the batcher must not (requests from every front end must meet in one batch per replica, or
batches shrink by the number of workers). So the workers parse (and read each classify
request's head and check its whole body's image: bridge ``CLASSIFY``, ``FETCH`` and
``WHOLE``, the bodies in a shared-memory ring, :mod:`gre.http.body_ring`; and make each
200's bytes from its prediction, :mod:`gre.http.bridge_answers`), and the
scheduler, the replicas, the metrics, ``/readyz``, admission, drain, reloads and systemd's
notifications stay in one process, unchanged. A worker that dies (even SIGKILL) loses only
its own connections: its requests still in the primary are dropped as if their clients had
left, and it is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message

from gre.batching.scheduler import Completed
from gre.config import ServerConfig
from gre.http import bridge
from gre.http.body_ring import RingReader
from gre.http.bridge import port_socket
from gre.http.bridge_answers import LabelsSent, crosses_as_prediction
from gre.http.classify_exchange import Checked, Sent, checked_from, sent_from, sent_of
from gre.http.direct_classify import DirectClassify, takes
from gre.http.protocol import LOST_CONNECTION, LostConnection
from gre.http.worker import WorkerSpec
from gre.malloc_thresholds import keep_freed_memory
from gre.messages import Prediction
from gre.metrics import Metrics
from gre.replicas import wire
from gre.service import Service

log = logging.getLogger("gre.http.front_ends")

#: First wait before replacing a worker that died, doubled per death in a row (max 10 s).
RESPAWN_BACKOFF_S = 0.25
#: How long the workers may take to start listening, s.
START_TIMEOUT_S = 30.0
#: How long stopped workers may take to close their connections and exit, s.
STOP_TIMEOUT_S = 10.0


@dataclass
class BridgedRequest:
    """One bridged request in the primary: its body chunks not yet read, and its state."""

    worker: WorkerProcess
    rid: int
    chunks: deque[Message]
    more_body: bool
    watch: LostConnection = field(default_factory=LostConnection)
    arrived: asyncio.Future[None] | None = None  # set when a chunk or GONE arrives
    asked: bool = False  # MORE sent, its chunk not yet here
    gone: bool = False  # the client or its worker left
    started: tuple[int, list[tuple[bytes, bytes]]] | None = None
    streaming: bool = False
    done: bool = False
    classify: DirectClassify | None = None  # a classify request waiting for its WHOLE body

    def wake(self) -> None:
        if self.arrived is not None and not self.arrived.done():
            self.arrived.set_result(None)

    def lost(self) -> None:
        """The client (or its worker) is gone."""
        self.gone = True
        self.chunks.append({"type": "http.disconnect"})
        self.more_body = False
        self.wake()
        self.watch.fire()

    async def receive(self) -> Message:
        """ASGI ``receive``: the body chunk by chunk, pulled from the worker; then, once the
        body is whole, waits for the disconnect (or the answer's end)."""
        while not self.chunks:
            if self.done or self.gone:
                return {"type": "http.disconnect"}
            if self.more_body and not self.asked:
                self.asked = True
                self.worker.write((bridge.MORE, self.rid))
            self.arrived = asyncio.get_running_loop().create_future()
            await self.arrived
        return self.chunks.popleft()

    async def send(self, message: Message) -> None:
        """ASGI ``send``: a whole answer crosses as one message."""
        if self.done:
            return
        if message["type"] == "http.response.start":
            self.started = (message["status"], list(message.get("headers", [])))
            return
        if message["type"] != "http.response.body" or self.started is None:
            return
        body, more = message.get("body", b""), message.get("more_body", False)
        if not more and not self.streaming:
            status, headers = self.started
            self.worker.write((bridge.RESPONSE, self.rid, status, headers, body))
        else:
            if not self.streaming:
                self.streaming = True
                self.worker.write((bridge.START, self.rid, *self.started))
            self.worker.write((bridge.CHUNK, self.rid, body, more))
        if not more:
            self.done = True
            self.wake()


class WorkerProcess:
    """One worker slot: its process (a new one after each death), its bridge, the requests
    it handed over that are not answered yet, the body bytes it last said it holds, and the
    models' labels its process was sent."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.frames: wire.FrameWriter | None = None  # its bridge's stream, while it has one
        self.ring: RingReader | None = None  # its body ring, while it has one
        self.acked = 0  # how far it was told the ring is read
        self.requests: dict[int, BridgedRequest] = {}
        self.held = 0
        self.handed: Any = None  # its gre_http_worker_requests_total child, once started
        self.labels = LabelsSent()  # the labels its process has for classify answers

    def write(self, message: tuple[Any, ...]) -> None:
        """Send one bridge message to the worker (dropped while it has no live process)."""
        if self.frames is not None:
            self.frames.send(message)


class FrontEnds:
    """N HTTP worker processes on ``server``'s address, bridged to ``app`` in this process.

    Args:
        server: ``[server]``; ``workers`` of them, each with ``max_inflight_body_bytes /
            workers`` of body budget and ``max_connections / workers`` connections (the
            kernel spreads connections evenly, so the totals hold roughly).
        app: the application every request runs through (gre's).
        metrics: where the workers' own refusals and held body bytes are counted.
        service: given, a classify request whose body came whole with its head is answered
            by a :class:`gre.http.direct_classify.DirectClassify` of it, without an ASGI task.
    """

    def __init__(
        self, server: ServerConfig, app: ASGIApp, metrics: Metrics, service: Service | None = None
    ) -> None:
        self.server = server
        self.app = app
        self.metrics = metrics
        self.service = service
        self.workers = [WorkerProcess(i) for i in range(server.workers)]
        self._reserved: socket.socket | None = None
        self.port = server.port
        self._stopping = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._supervisors: list[asyncio.Task[None]] = []

    @property
    def held_bytes(self) -> int:
        """Body bytes the workers' budgets hold, as last reported."""
        return sum(worker.held for worker in self.workers)

    @property
    def pids(self) -> list[int | None]:
        """Each worker's process id (``None`` while it is being replaced)."""
        return [w.process.pid if w.process else None for w in self.workers]

    async def start(self) -> None:
        """Bind the address and start every worker (each replaced whenever it dies); returns
        once all of them listen.

        Raises:
            OSError: the address cannot be bound, or the workers did not listen in time.
        """
        keep_freed_memory()  # the bodies taken out of the rings, a batch at a time
        self._reserved = port_socket(self.server.host, self.server.port)
        self.port = self._reserved.getsockname()[1]
        self.metrics.inflight_body_bytes.set_function(lambda: self.held_bytes)
        started = [asyncio.Event() for _ in self.workers]
        self._supervisors = [
            asyncio.create_task(self._supervise(worker, event))
            for worker, event in zip(self.workers, started, strict=True)
        ]
        try:
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), START_TIMEOUT_S)
        except TimeoutError:
            await self.stop()
            raise OSError(
                f"HTTP workers did not listen on {self.server.host}:{self.port} within "
                f"{START_TIMEOUT_S:.0f} s (their log lines above say why)"
            ) from None
        log.info("%d HTTP workers on %s:%d", len(self.workers), self.server.host, self.port)

    async def stop(self) -> None:
        """Tell every worker to stop (after the drain: nothing of theirs is in flight), wait
        for them to exit (SIGKILL after :data:`STOP_TIMEOUT_S`)."""
        if self._stopping:
            return
        self._stopping = True
        for worker in self.workers:
            worker.write((bridge.STOP,))
        if self._supervisors:
            _, late = await asyncio.wait(self._supervisors, timeout=STOP_TIMEOUT_S)
            for worker in self.workers:  # a worker still closing connections: killed
                if late and worker.process is not None and worker.process.returncode is None:
                    log.warning("HTTP worker %d did not stop: killing it", worker.index)
                    worker.process.kill()
        for supervisor in self._supervisors:
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        if self._reserved is not None:
            self._reserved.close()

    def _spec(self, index: int) -> WorkerSpec:
        s = self.server
        return WorkerSpec(
            index=index,
            host=s.host,
            port=self.port,
            log_level=s.log_level,
            header_timeout_s=s.header_timeout_s,
            body_timeout_s=s.body_timeout_s,
            max_header_bytes=s.max_header_bytes,
            max_connections=max(1, s.max_connections // s.workers),
            max_body_bytes=s.max_body_bytes,
            budget_bytes=max(1, s.max_inflight_body_bytes // s.workers),
            keep_alive_timeout_s=s.keep_alive_timeout_s,
            backlog=s.backlog,
            max_pixels=s.max_pixels if self.service is not None else None,
        )

    async def _supervise(self, worker: WorkerProcess, started: asyncio.Event) -> None:
        backoff = RESPAWN_BACKOFF_S
        while not self._stopping:
            status = await self._run(worker, started)
            if self._stopping:
                return
            log.error("HTTP worker %d exited with %s: replacing it", worker.index, status)
            self.metrics.worker_restarts.inc()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _run(self, worker: WorkerProcess, started: asyncio.Event) -> int | None:
        """Run one process of ``worker`` until it exits; returns its exit status."""
        ours, theirs = socket.socketpair()
        ring = self._ring() if self.service is not None else None
        fds = [theirs.fileno()] if ring is None or ring.fd is None else [theirs.fileno(), ring.fd]
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                "from gre.http.worker import main; main()",
                *map(str, fds),
                pass_fds=fds,
                stdin=asyncio.subprocess.DEVNULL,
            )
        except BaseException:
            if ring is not None:
                ring.close()
            raise
        finally:
            theirs.close()
        if ring is not None:
            ring.sent()
        worker.process = process
        worker.ring, worker.acked = ring, 0
        worker.labels = LabelsSent()
        worker.handed = self.metrics.worker_requests.labels(str(worker.index))
        reader, writer = await asyncio.open_connection(sock=ours)
        worker.frames = wire.FrameWriter(writer)
        worker.frames.send(self._spec(worker.index))
        try:
            await self._read(worker, wire.FrameReader(reader), started)
        finally:
            writer.close()
            worker.frames = None
            if worker.ring is not None:  # every body in it was taken as its message was read
                worker.ring.close()
                worker.ring = None
            for request in list(worker.requests.values()):
                request.lost()  # its connection went with the worker
            worker.requests.clear()
            worker.held = 0
            try:
                status = await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                process.kill()
                status = await process.wait()
            worker.process = None
        return status

    async def _read(
        self, worker: WorkerProcess, frames: wire.FrameReader, listening: asyncio.Event
    ) -> None:
        while True:
            try:
                messages = await frames.read()
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            for message in messages:
                self._handle(worker, message, listening)
            ring = worker.ring
            if ring is not None and ring.position != worker.acked:
                worker.acked = ring.position
                worker.write((bridge.TAKEN, ring.position))

    @staticmethod
    def _ring() -> RingReader | None:
        """A body ring for a new worker process, or ``None`` (bodies then cross inline)."""
        try:
            return RingReader()
        except OSError as exc:
            log.warning("no body ring for an HTTP worker (%s): its bodies cross inline", exc)
            return None

    def _handle(self, worker: WorkerProcess, message: Any, listening: asyncio.Event) -> None:
        """One message from ``worker``."""
        kind = message[0]
        if kind == bridge.HEAD:
            worker.handed.inc()
            _, rid, scope, body, more = message
            chunk = {"type": "http.request", "body": body, "more_body": more}
            request = BridgedRequest(worker, rid, deque([chunk]), more)
            worker.requests[rid] = request
            if self.service is not None and takes(scope):
                sent = sent_of(scope["headers"], scope["query_string"])
                if not more:
                    self._classify(self.service, request, sent, body)
                else:  # admitted (or refused) before the upload; then its whole body
                    assert not body, "the worker keeps what came of a body it will send whole"
                    self._fetch(self.service, request, sent)
                return
            task = asyncio.create_task(self._serve(request, scope))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif kind == bridge.CLASSIFY:
            worker.handed.inc()
            _, rid, sent, checked, started, carried = message
            body = self._carried(worker, carried)
            # Answered directly: the ASGI receive() that reads a request's chunks never runs.
            request = BridgedRequest(worker, rid, deque(), False)
            worker.requests[rid] = request
            assert self.service is not None, "CLASSIFY is sent only when the spec says so"
            self._classify(
                self.service, request, sent_from(sent), body, checked_from(checked), started
            )
        elif kind == bridge.WHOLE:
            _, rid, checked, carried = message
            body = self._carried(worker, carried)  # even for a request gone: the ring's order
            fetched = worker.requests.get(rid)
            classify = fetched.classify if fetched is not None else None
            if classify is not None and classify.receiving:
                classify.checked = None if checked is None else checked_from(checked)
                classify.body(body)
                if classify.receiving:
                    classify.complete()
        elif kind == bridge.BODY:
            waiting = worker.requests.get(message[1])
            if waiting is not None:
                _, _, body, more = message
                waiting.chunks.append({"type": "http.request", "body": body, "more_body": more})
                waiting.more_body, waiting.asked = more, False
                waiting.wake()
        elif kind == bridge.GONE:
            gone = worker.requests.get(message[1])
            if gone is not None:
                gone.lost()
        elif kind == bridge.REJECTED:
            self.metrics.rejected.labels(message[1]).inc()
        elif kind == bridge.HELD:
            worker.held = message[1]
        elif kind == bridge.LISTENING:
            listening.set()

    @staticmethod
    def _carried(worker: WorkerProcess, body: bytes | tuple[int, int]) -> bytes:
        """A body as it crossed: itself, or its ``(position, length)`` in the ring."""
        if isinstance(body, bytes):
            return body
        assert worker.ring is not None, "a body in the ring, but this worker has none"
        return worker.ring.take(*body)

    @staticmethod
    def _classify(
        service: Service,
        request: BridgedRequest,
        sent: Sent,
        body: bytes,
        checked: Checked | None = None,
        started: float | None = None,
    ) -> None:
        """Answer a bridged classify request whose body is whole, by callback; ``checked``
        and ``started``: the worker's image check and when it had the head, when it sent
        them (``CLASSIFY``)."""
        classify = BridgedClassify(service, request, sent, checked, started)
        classify.begin(body, more=False)

    @staticmethod
    def _fetch(service: Service, request: BridgedRequest, sent: Sent) -> None:
        """Admit a bridged classify request whose body is to come (or refuse it before the
        upload), then ask its worker for the whole body, checked (``FETCH``)."""
        classify = request.classify = BridgedClassify(service, request, sent, None, None)
        classify.begin(b"", more=True)
        if classify.receiving:
            request.worker.write((bridge.FETCH, request.rid))

    async def _serve(self, request: BridgedRequest, scope: dict[str, Any]) -> None:
        scope["extensions"] = {LOST_CONNECTION: request.watch}
        scope["state"] = {}
        try:
            await self.app(scope, request.receive, request.send)
        except Exception:
            log.exception("the application raised outside its own error handling")
            if request.started is None and not request.done:
                body = b'{"error":"internal","message":"internal error"}'
                headers = [(b"content-type", b"application/json")]
                request.worker.write((bridge.RESPONSE, request.rid, 500, headers, body))
        finally:
            request.done = True
            request.worker.requests.pop(request.rid, None)


class BridgedClassify(DirectClassify):
    """A :class:`DirectClassify` answering a bridged request: its 200 crosses as the
    prediction, and its worker makes the answer's bytes (:mod:`gre.http.bridge_answers`);
    every other answer crosses whole (``RESPONSE``)."""

    __slots__ = ("request",)

    def __init__(
        self,
        service: Service,
        request: BridgedRequest,
        sent: Sent,
        checked: Checked | None,
        started: float | None,
    ) -> None:
        def answer(status: int, headers: list[tuple[bytes, bytes]], content: bytes) -> None:
            request.worker.write((bridge.RESPONSE, request.rid, status, headers, content))

        def done() -> None:
            request.done = True
            request.classify = None
            request.worker.requests.pop(request.rid, None)

        super().__init__(service, sent, request.watch, answer, done, checked, started)
        self.request = request

    def _succeed(self, completed: Completed) -> None:
        self.exchange.account(completed)
        assert isinstance(completed.outcome, Prediction)
        if not crosses_as_prediction(completed.outcome):
            self._answer(200, *self.exchange.encoded(completed))  # raises: answered 500
            return
        self._end()
        worker = self.request.worker
        encoder = self.service.answer_encoder(completed)
        worker.labels.answer(
            worker.write, self.request.rid, encoder, completed, self.exchange.request_id
        )
        self.exchange.finish(200)
