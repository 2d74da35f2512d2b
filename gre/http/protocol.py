"""HTTP/1.1 connections with read deadlines, a connection limit and a budget of body bytes:
uvicorn's httptools protocol, hardened against clients that send slowly, hold connections open
or make the server hold their uploads.

Uvicorn on its own bounds only the idle time between two requests (``timeout_keep_alive``): a
client that connects and sends nothing, or sends its request head or body a byte at a time
("slowloris"), holds a connection, a task and its buffers for as long as it likes, and httptools
buffers a request head of any size. This protocol adds, per connection:

- a **head deadline**: the request line and headers must be complete within
  ``header_timeout_s`` of the connection opening or, on a kept-alive connection, of the next
  request's first byte; else 408.
- a **body deadline**: the whole body must arrive within ``body_timeout_s`` of the head; else
  408. Bodies are read before a request is queued (``gre.http.request_parts.read_body``), so a
  slow body never holds a queue slot or a replica.
- a **head size limit**: a head longer than ``max_header_bytes`` gets 431.
- a **connection limit**: beyond ``max_connections`` open connections, a new one closes a
  connection that has no request in progress (idle keep-alive, or still sending its head), so
  idle or slow clients cannot starve others; if every connection has a request in progress, the
  new connection's request gets 503 ``too_many_connections`` (``Retry-After: 1``). This
  replaces uvicorn's ``limit_concurrency``, which counts idle keep-alive connections as load.

And, across all connections of a server, a **body budget** (:class:`gre.http.budget.BodyBudget`,
``max_inflight_body_bytes``, 256 MiB by default): a request with a ``Content-Length`` reserves
that many bytes when its head is complete (capped at ``max_body_bytes``: the application
refuses a longer one with 413 before reading it), so that once admitted it never fails mid-body
for want of room; a chunked body reserves each chunk as it arrives. Bytes stay reserved until
the request's answer is complete (the application holds the body until then: it is queued for
the replicas) or its connection is lost. What does not fit first makes room: the unfinished
upload holding the most bytes is cut off (503 ``too_many_bytes``, closed; the application sees
a disconnect), again and again, as long as it holds more than the newcomer needs, so a stalled
large upload yields to a small photo while a large newcomer cannot evict its peers (as Envoy's
overload manager resets the streams that use the most buffer memory). Bodies already whole are
never cut off. If it still does not fit, a declared length is answered 503 ``too_many_bytes``
(``Retry-After: 1``) before any of its body is read, and a chunk that would cross the budget
cuts its request off the same way.

Every refusal is gre's JSON error (``{"error": ..., "message": ...}``) with ``Connection:
close``, as is httptools' answer to a malformed request (400 ``bad_request``), and is reported
through :attr:`Limits.on_reject` (``gre_rejected_total{reason}``). A deadline that passes while
the same connection is answering an earlier request lets that answer finish, then closes.
"""

from __future__ import annotations

import asyncio
import http
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from gre.http.budget import BodyBudget
from gre.http.errors import ErrorCode, error_body, error_response, new_request_id


def _ignore(reason: str) -> None:
    return None


#: How long a connection cut off with an answer goes on reading (and dropping) the client's
#: bytes before it closes, s.
LINGER_S = 2.0

#: The scope extension under which each request's :class:`LostConnection` is found.
LOST_CONNECTION = "gre.lost_connection"
#: The scope extension under which each request has a ``() -> bool``: whether ``receive()``
#: would answer at once (body bytes have arrived, or the body is complete), so that an HTTP
#: worker can hand a request on without waiting for a body that may never come.
BODY_READY = "gre.body_ready"
#: The scope extension under which, on a protocol made with ``whole_answers``, each request
#: has a ``(status, headers, body) -> bool`` that answers it in one write
#: (:meth:`LimitedHttpProtocol.answer_directly`) and says ``True``, or says ``False`` when the
#: answer must go through ASGI ``send`` (see :func:`_whole_answer`). An HTTP worker relays
#: the primary's whole answers with it: uvicorn's ``send`` writes the head and the body
#: apart, two system calls and two awaits.
WHOLE_ANSWER = "gre.whole_answer"


class LostConnection:
    """Tells a request's handler that its connection was lost, by a callback, so that a
    handler waiting for its answer needs no ``receive()`` task per request to watch for
    ``http.disconnect`` (found in ``scope["extensions"][LOST_CONNECTION]``)."""

    __slots__ = ("callback", "lost")

    def __init__(self) -> None:
        self.lost = False
        #: Called once, from the event loop, when the connection is lost; ``None``: nobody.
        self.callback: Callable[[], None] | None = None

    def fire(self) -> None:
        """The connection is gone: call the callback (once)."""
        self.lost = True
        callback, self.callback = self.callback, None
        if callback is not None:
            callback()


def _body_ready(cycle: RequestResponseCycle) -> Callable[[], bool]:
    """The :data:`BODY_READY` test of ``cycle``'s request. It holds the cycle weakly: the
    cycle holds its scope, the scope this test, so a strong reference would make every
    request a reference cycle (14 objects) that only the cyclic garbage collector frees."""
    ref = weakref.ref(cycle)

    def ready() -> bool:
        held = ref()
        return held is None or bool(held.body) or not held.more_body

    return ready


def _whole_answer(
    protocol: LimitedHttpProtocol, cycle: RequestResponseCycle
) -> Callable[[int, list[tuple[bytes, bytes]], bytes], bool]:
    """The :data:`WHOLE_ANSWER` of ``cycle``'s request, holding both weakly (as
    :func:`_body_ready`). It declines (``False``) a HEAD request (uvicorn drops its body), an
    answer without ``content-length`` (uvicorn frames it chunked), one begun already, and
    one while writes are paused (uvicorn's ``send`` waits for the drain)."""
    protocol_ref, cycle_ref = weakref.ref(protocol), weakref.ref(cycle)

    def answer(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
        held, own = cycle_ref(), protocol_ref()
        if held is None or own is None or held.response_started or own.flow.write_paused:
            return False
        if held.scope["method"] == "HEAD" or not any(n == b"content-length" for n, _ in headers):
            return False
        own.answer_directly(held, status, headers, body)
        return True

    return answer


class DirectHandler(Protocol):
    """A request the connection answers itself, without the ASGI application
    (:mod:`gre.http.direct_classify`): :meth:`start` when its turn comes, then, while
    :attr:`receiving`, :meth:`body` per chunk and :meth:`complete` at the end; it answers
    through :meth:`LimitedHttpProtocol.answer_directly`."""

    @property
    def receiving(self) -> bool:
        """Whether it wants the body's chunks."""
        ...

    def start(self) -> None:
        """Its turn: the head is in, and every request before it is answered."""
        ...

    def body(self, chunk: bytes) -> None:
        """A chunk of its body."""
        ...

    def complete(self) -> None:
        """Its body is whole."""
        ...


class DirectRoute(Protocol):
    """Picks the requests a connection answers itself."""

    def __call__(
        self, protocol: LimitedHttpProtocol, cycle: RequestResponseCycle
    ) -> DirectHandler | None:
        """A handler for ``cycle``'s request, or ``None`` for the ASGI application."""
        ...


@dataclass(frozen=True)
class Limits:
    """What one client may hold (the ``[server]`` keys of the same names; README "Limits").

    Attributes:
        header_timeout_s: the request head must be complete within this, s.
        body_timeout_s: the whole body must arrive within this after the head, s.
        max_header_bytes: longest request head (request line + headers), bytes.
        max_connections: open connections beyond which idle ones are closed.
        max_body_bytes: the application's body limit, bytes: the most a declared length
            reserves (the application answers a longer one 413 without reading it); ``None``:
            no cap.
        budget: the body bytes in flight, shared by every connection of the server
            (``max_inflight_body_bytes``).
        on_reject: called with the ``gre_rejected_total`` reason of each refusal made here.
    """

    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    max_header_bytes: int = 16 * 1024
    max_connections: int = 1024
    max_body_bytes: int | None = None
    budget: BodyBudget = field(default_factory=BodyBudget)
    on_reject: Callable[[str], None] = _ignore


class LimitedHttpProtocol(HttpToolsProtocol):
    """Uvicorn's httptools protocol with :class:`Limits` (see the module docstring).

    Use :func:`limited_protocol` to get a class bound to one :class:`Limits`; uvicorn takes the
    class as ``uvicorn.Config(http=...)`` and makes one instance per connection.
    """

    limits: ClassVar[Limits] = Limits()
    #: The requests answered without the ASGI application (``None``: none).
    direct: ClassVar[DirectRoute | None] = None
    #: Whether each request gets a :data:`WHOLE_ANSWER` (an HTTP worker's protocol).
    whole_answers: ClassVar[bool] = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._in_body = False  # between the head and the end of the body
        self._head_bytes = 0  # bytes received while the current head is unfinished
        self._head_size = 0  # the current head's size as parsed so far (URL, then headers)
        # The part of a request whose deadline runs: (its serial, "head" or "body"), or None.
        # Its timer is armed only at the end of a read that leaves it unfinished
        # (_sync_deadline): a request that arrives in one read, as most do, arms none.
        self._due: tuple[int, Literal["head", "body"]] | None = None
        self._parts = 0  # parts begun on this connection: tells a new body from the last
        self._armed: tuple[int, Literal["head", "body"]] | None = None  # what the timer is for
        self._deadline: asyncio.TimerHandle | None = None
        # Idle since (loop time) while kept alive between requests; None while busy. One
        # keep-alive timer stays armed across requests (see _keep_alive).
        self._idle_since: float | None = None
        self._deaf = False  # cut off: read nothing more from this client
        self._refused = False  # over max_connections: its request gets 503
        self._per_chunk = False  # the current body has no Content-Length: reserve as it comes
        # Bytes each request of this connection holds in the budget (several when pipelined).
        self._ledger: dict[RequestResponseCycle, int] = {}
        self._application = self.app  # refusals swap self.app for a moment (_answer_with)
        # The directly answered request receiving its body (always the latest cycle's).
        self._receiver: tuple[RequestResponseCycle, DirectHandler] | None = None
        self._heading = False  # within uvicorn's on_headers_complete
        self._deferred: DirectHandler | None = None  # to start once its head is handled
        super().connection_made(transport)  # type: ignore[arg-type]
        self._begin("head")
        self._sync_deadline()
        if len(self.connections) > self.limits.max_connections and not self._close_an_idle():
            self._refused = True

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._idle_since = None
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        for cycle in list(self._ledger):
            self._release(cycle)
        super().connection_lost(exc)
        cycle = self.cycle
        if cycle is not None and cycle.disconnected:  # its answer was not complete
            _lost_connection(cycle)

    def data_received(self, data: bytes) -> None:
        if self._deaf:
            return
        if not self._in_body:
            # Bytes after a complete request start the next head: its deadline runs from now.
            if self._due is None:
                self._begin("head")
            self._head_bytes += len(data)
        try:
            super().data_received(data)
            # httptools buffers an unfinished head whole: bound it as it arrives.
            if not self._in_body and self._head_bytes > self.limits.max_header_bytes:
                self._head_too_large()
        finally:
            self._sync_deadline()

    def on_message_begin(self) -> None:
        self._head_size = 0
        super().on_message_begin()
        if self._due is None:  # a pipelined head that began in the last body's chunk
            self._begin("head")

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_headers_complete(self) -> None:
        if self._deaf:
            return
        # The headers' size once, here, not per header: ": " and CRLF are 4 bytes each.
        self._head_size += sum(len(name) + len(value) + 4 for name, value in self.headers)
        if self._head_size > self.limits.max_header_bytes:  # a long head in one read
            self._head_too_large()
            return
        self._head_bytes = self._head_size = 0
        self._in_body = True
        self._begin("body")
        self._per_chunk = False
        if self._refused:  # its answer reads no body: it reserves none
            self._reject(ErrorCode.TOO_MANY_CONNECTIONS)
            self._answer_with(_too_many_connections)
            return
        declared = self._declared_length()
        self._per_chunk = declared is None
        if declared and not self._make_room(declared, declared):
            self._refuse_declared(declared)
            return
        previous = self.cycle
        # The request's scope (uvicorn's self.scope, the new cycle's) is complete before a
        # direct answer's handler is made for it.
        extensions: dict[str, Any] = self.scope.setdefault("extensions", {})
        extensions[LOST_CONNECTION] = LostConnection()
        self._heading = True  # a direct answer's start waits in self._deferred till the end
        try:
            super().on_headers_complete()
        finally:
            self._heading = False
        if self.cycle is not previous:  # not an upgrade: a new request
            extensions[BODY_READY] = _body_ready(self.cycle)
            if self.whole_answers:
                extensions[WHOLE_ANSWER] = _whole_answer(self, self.cycle)
            if declared:
                self._hold(declared)
        deferred, self._deferred = self._deferred, None
        if deferred is not None:  # now that its scope and its bytes in the budget are set
            self._start_directly(self.cycle, deferred)

    def on_body(self, body: bytes) -> None:
        if self._deaf:
            return
        # Bytes after the answer are discarded by uvicorn: they hold nothing.
        if self._per_chunk and not self.cycle.response_complete and not self._take(len(body)):
            return
        handler = self._receiving()
        if handler is not None:
            handler.body(body)  # kept by the handler: uvicorn's buffer and its pausing unused
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._deaf:
            return
        self._in_body = False
        self._due = None  # the timer, if one was armed, is cancelled at the end of the read
        super().on_message_complete()
        handler = self._receiving()
        if handler is not None:
            self._receiver = None
            handler.complete()
        # uvicorn pauses reading while a body's buffer is over 64 KiB and resumes it in the
        # application's next receive(); after the last chunk there is none, so the EOF of a
        # client that leaves while its request waits went unread and the request was served
        # anyway. The body is all here: read on (a pipelined request pauses at its head).
        self.flow.resume_reading()
        cycle = self.cycle
        if cycle is not None and cycle.response_complete and not self.pipeline:
            # Answered before its body ended (413, 422): the body's bytes made the connection
            # busy again, so it is idle from now, or it could idle forever.
            self._keep_alive()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        # uvicorn's one place where a request's turn comes (at once, or once the request
        # before it on the connection is answered): answer it here when the route takes it.
        route = self.direct
        handler = route(self, cycle) if route is not None and app is self._application else None
        if handler is None:
            super()._start_asgi_task(cycle, app)
        elif self._heading:
            self._deferred = handler  # started at the end of on_headers_complete
        else:
            self._start_directly(cycle, handler)

    def _start_directly(self, cycle: RequestResponseCycle, handler: DirectHandler) -> None:
        handler.start()
        if handler.receiving:
            self._receiver = (cycle, handler)

    def _receiving(self) -> DirectHandler | None:
        """The directly answered handler of the current request, if it wants body chunks."""
        receiver = self._receiver
        if receiver is None or receiver[0] is not self.cycle or not receiver[1].receiving:
            return None
        return receiver[1]

    def answer_directly(
        self, cycle: RequestResponseCycle, status: int, headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> None:  # fmt: skip
        """Answer ``cycle``'s request (a :class:`DirectHandler`'s) in one write, as uvicorn's
        ``send`` would: its default headers (``server``, ``date``) first, ``connection:
        close`` where the connection ends after it; nothing when the client is gone.
        ``headers``: lower-case names, ``content-length`` among them."""
        if cycle.disconnected or cycle.response_complete or self.transport.is_closing():
            return
        cycle.response_started = cycle.response_complete = True
        cycle.waiting_for_100_continue = False
        closes = any(n == b"connection" and b"close" in v.lower() for n, v in headers)
        if closes:
            cycle.keep_alive = False
        lines = [STATUS_LINE[status]]
        lines += [n + b": " + v + b"\r\n" for n, v in self.server_state.default_headers]
        lines += [n + b": " + v + b"\r\n" for n, v in headers]
        if not cycle.keep_alive and not closes:
            lines.append(b"connection: close\r\n")
        lines += [b"\r\n", body]
        self.transport.write(b"".join(lines))
        cycle.message_event.set()
        if not cycle.keep_alive:
            self.transport.close()
        cycle.on_response()

    def on_response_complete(self) -> None:
        # Its answer is out: the application has let go of the body.
        for cycle in [c for c in self._ledger if c.response_complete]:
            self._release(cycle)
        # uvicorn's, but for the keep-alive timer (_keep_alive in place of a call_later).
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self._keep_alive()

    def _unset_keepalive_if_required(self) -> None:
        # uvicorn cancels its keep-alive timer at every read and arms a new one after every
        # answer: a call_later and a cancel per request (~3 % of the front end's
        # instructions). Here the timer stays armed; a read only marks the connection busy.
        self._idle_since = None

    def _keep_alive(self) -> None:
        """The connection is idle from now: closed after ``timeout_keep_alive`` s unless a
        byte arrives first. The one timer armed for it is re-armed for the time left when it
        fires after the connection was busy since (:meth:`_keep_alive_expired`)."""
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self._keep_alive_expired
            )

    def _keep_alive_expired(self) -> None:
        self.timeout_keep_alive_task = None
        if self._idle_since is None:
            return  # busy: its answer arms the timer again
        left = self._idle_since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_expired)
        else:
            self.timeout_keep_alive_handler()

    def send_400_response(self, msg: str) -> None:
        # httptools could not parse the request: gre's JSON instead of uvicorn's plain text.
        self._reject(ErrorCode.BAD_REQUEST)
        self._deaf = True
        self._write_error(ErrorCode.BAD_REQUEST, f"malformed HTTP request ({msg.rstrip('.')})")
        self._close_after_answer()

    def _head_too_large(self) -> None:
        limit = self.limits.max_header_bytes
        self._cut_off(ErrorCode.HEADERS_TOO_LARGE, f"the request head exceeds {limit} bytes")

    def _begin(self, part: Literal["head", "body"]) -> None:
        """A request's ``part`` begins: its deadline runs from now."""
        self._parts += 1
        self._due = (self._parts, part)

    def _sync_deadline(self) -> None:
        """Arm the timer for the part due, if it is not armed for it already; cancel it when
        none is due (or the connection is deaf). Called where a read ends, which is "now" for
        every part that began during it: a timer per part cost a call_later and a cancel, 5-6 %
        of the front end's instructions per request (``python -m benchmarks.instructions``),
        for deadlines that rarely matter."""
        due = None if self._deaf else self._due
        if due == self._armed:
            return
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._armed = due
        if due is not None:
            part = due[1]
            timeout = self.limits.header_timeout_s if part == "head" else self.limits.body_timeout_s
            self._deadline = self.loop.call_later(timeout, self._timed_out, part, timeout)

    def _disarm(self) -> None:
        """No deadline runs: cancel the timer now."""
        self._due = None
        self._sync_deadline()

    def _timed_out(self, part: str, timeout: float) -> None:
        # self._armed stays: this part's deadline has passed, and is not armed again.
        self._deadline = None
        what = "request head (request line and headers)" if part == "head" else "request body"
        self._cut_off(ErrorCode.REQUEST_TIMEOUT, f"the {what} did not arrive within {timeout:g} s")

    def _reject(self, code: ErrorCode) -> None:
        if code.reason is not None:
            self.limits.on_reject(code.reason)

    def _cut_off(self, code: ErrorCode, message: str) -> None:
        """Stop reading from this client; answer ``code`` where an answer can still be sent,
        and close."""
        if self._deaf or self.transport.is_closing():
            return
        self._reject(code)
        self._deaf = True
        self._disarm()
        cycle = self.cycle
        answering = cycle is not None and not cycle.response_complete
        if answering and (not self._in_body or cycle.response_started):
            # The request in progress is whole, or already being answered: finish that answer,
            # then close (uvicorn closes after a response when keep_alive is off).
            cycle.keep_alive = False
            return
        if answering:
            # Its body stalled: the application sees a disconnect, and its answer is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
            _lost_connection(cycle)  # a directly answered request has no receive() to see it
            self._release(cycle)  # now: a newcomer may be waiting for the room
        # Answer the request whose head or body stalled; not a request already answered (its
        # body trickling on), nor a connection that sent nothing and so asked nothing.
        began = self._head_bytes > 0 or self._head_size > 0
        if answering or (not self._in_body and began):
            self._write_error(code, message)
        self._close_after_answer()

    def _close_after_answer(self) -> None:
        """Close a connection that was just answered (and made deaf): send what is written
        and a FIN, but go on reading, and dropping, what the client still sends for
        :data:`LINGER_S` before closing. Closed at once, bytes arriving after the close make
        the kernel answer RST, and a client that gets the RST before it has read the answer
        loses the answer (nginx's ``lingering_close`` for the same reason)."""
        if self.transport.is_closing():
            return
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)

    def _write_error(self, code: ErrorCode, message: str) -> None:
        """Write ``code``'s answer straight to the transport (no application is running),
        with ``Connection: close``: the connection closes after it."""
        body = error_body(code, message)
        extra = {**code.headers, "Connection": "close"}
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *((name.lower().encode(), value.encode()) for name, value in extra.items()),
            (b"x-request-id", new_request_id().encode()),  # every answer has one (README)
        ]
        phrase = http.HTTPStatus(code.status).phrase
        lines = [f"HTTP/1.1 {code.status} {phrase}\r\n".encode()]
        lines += [name + b": " + value + b"\r\n" for name, value in headers]
        self.transport.write(b"".join([*lines, b"\r\n", body]))

    def _declared_length(self) -> int | None:
        """The bytes the request's ``Content-Length`` says its body holds, capped at
        ``max_body_bytes``; ``None`` without one (chunked, or no body)."""
        for name, value in self.headers:
            if name == b"content-length" and value.strip().isdigit():  # httptools checked it
                cap = self.limits.max_body_bytes
                size = int(value)
                return size if cap is None else min(size, cap)
        return None

    def _take(self, size: int) -> bool:
        """Reserve a chunk of ``size`` bytes of a chunked body, making room if need be;
        whether it fits (if not, the request is cut off with 503 ``too_many_bytes``)."""
        need = self._ledger.get(self.cycle, 0) + size  # the whole body so far, this chunk too
        if self._make_room(size, need):
            self._hold(size)
            return True
        capacity = self.limits.budget.capacity
        self._cut_off(
            ErrorCode.TOO_MANY_BYTES,
            f"the body grew past what fits in the {capacity} bytes that bodies in flight may "
            "hold (max_inflight_body_bytes); retry shortly",
        )
        return False

    def _make_room(self, size: int, need: int) -> bool:
        """Whether ``size`` more bytes fit in the budget, after cutting off, largest first,
        other connections' unfinished uploads that hold more than ``need`` bytes (the whole
        body of the request that asks)."""
        budget = self.limits.budget
        while not budget.fits(size):
            victim = max(self._uploads(), key=LimitedHttpProtocol._upload_held, default=None)
            if victim is None or victim._upload_held() <= need:
                return False
            capacity = budget.capacity
            victim._cut_off(
                ErrorCode.TOO_MANY_BYTES,
                "the unfinished body was cut off to make room for other requests: bodies in "
                f"flight may hold {capacity} bytes (max_inflight_body_bytes); retry shortly",
            )
        return True

    def _uploads(self) -> list[LimitedHttpProtocol]:
        """The other connections whose unfinished upload could be cut off."""
        return [
            other
            for other in self.connections
            if other is not self
            and isinstance(other, LimitedHttpProtocol)
            and other._upload_held() > 0
        ]

    def _upload_held(self) -> int:
        """Bytes held by the body this connection is receiving, if it may be cut off: the
        one request in progress here (none queued behind another, whose cut-off would take
        a whole body with it), not yet answered; else 0."""
        cycle = self.cycle
        if not self._in_body or self._deaf or self.transport.is_closing() or self.pipeline:
            return 0
        if cycle is None or cycle.response_started:
            return 0
        return self._ledger.get(cycle, 0)

    def _hold(self, size: int) -> None:
        """Reserve ``size`` bytes for the current request; the caller made room for them."""
        reserved = self.limits.budget.reserve(size)
        assert reserved, "reserved without room"
        self._ledger[self.cycle] = self._ledger.get(self.cycle, 0) + size

    def _release(self, cycle: RequestResponseCycle) -> None:
        """Give back what ``cycle``'s body holds in the budget (nothing if it holds none)."""
        self.limits.budget.release(self._ledger.pop(cycle, 0))

    def _refuse_declared(self, declared: int) -> None:
        """Answer 503 ``too_many_bytes`` to a request whose ``declared`` body does not fit,
        reading none of it; the answer closes the connection."""
        self._reject(ErrorCode.TOO_MANY_BYTES)
        capacity = self.limits.budget.capacity
        message = (
            f"the body's {declared} bytes do not fit in the {capacity} bytes that bodies in "
            "flight may hold (max_inflight_body_bytes); retry shortly"
        )
        self._answer_with(_refusal(ErrorCode.TOO_MANY_BYTES, message))
        # Parse nothing more (its body, or a request behind it): the answer closes anyway.
        self._deaf = True
        self._disarm()

    def _answer_with(self, app: ASGIApp) -> None:
        """Start the request whose head just completed with ``app`` answering it instead of
        the application (in turn, behind a pipelined request in progress)."""
        application, self.app = self.app, app
        try:
            super().on_headers_complete()
        finally:
            self.app = application

    def _close_an_idle(self) -> bool:
        """Close one other connection with no request in progress; whether there was one."""
        for other in self.connections:
            if other is not self and isinstance(other, LimitedHttpProtocol) and other._idle():
                other._deaf = True
                other._disarm()
                other.transport.close()
                return True
        return False

    def _idle(self) -> bool:
        cycle = self.cycle
        return (cycle is None or cycle.response_complete) and not self.transport.is_closing()


def _lost_connection(cycle: RequestResponseCycle) -> None:
    """Tell ``cycle``'s :class:`LostConnection` that its client is gone."""
    watch = cycle.scope.get("extensions", {}).get(LOST_CONNECTION)
    if isinstance(watch, LostConnection):
        watch.fire()


def _refusal(code: ErrorCode, message: str) -> ASGIApp:
    """An ASGI application that answers ``code`` with ``message`` to every request."""

    async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(code, message, {"X-Request-Id": new_request_id()})
        await response(scope, receive, send)

    return refuse


async def _too_many_connections(scope: Scope, receive: Receive, send: Send) -> None:
    """The answer on a connection opened beyond ``max_connections`` with none to spare."""
    response = error_response(
        ErrorCode.TOO_MANY_CONNECTIONS,
        "every connection is busy with a request; retry shortly",
        {"X-Request-Id": new_request_id()},
    )
    await response(scope, receive, send)


def limited_protocol(
    limits: Limits, direct: DirectRoute | None = None, whole_answers: bool = False
) -> type[LimitedHttpProtocol]:
    """A :class:`LimitedHttpProtocol` bound to ``limits`` (and answering what ``direct``
    takes itself; giving each request a :data:`WHOLE_ANSWER` with ``whole_answers``), for
    ``uvicorn.Config(http=...)``."""
    attributes = {"limits": limits, "direct": direct, "whole_answers": whole_answers}
    return type("LimitedHttpProtocol", (LimitedHttpProtocol,), attributes)
