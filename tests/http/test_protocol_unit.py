"""LimitedHttpProtocol in-process, the way uvicorn's tests/protocols/test_http.py tests its own
protocols: a mock transport records what is written, a mock loop records timers so that each test
fires a deadline by hand (no sleeps, no sockets), and the protocol runs on a real uvicorn
``Config`` and ``ServerState``. Every answer is asserted byte for byte.

It also pins the uvicorn internals gre/http/protocol.py relies on, so that an upgrade that renames
them fails here (pyproject.toml bounds uvicorn to the versions these tests passed on).
"""

from __future__ import annotations

import asyncio
import http
import json
from collections.abc import Callable
from typing import Any

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

import gre.http.protocol
from gre.http.budget import BodyBudget
from gre.http.protocol import (
    BODY_READY,
    LOST_CONNECTION,
    WHOLE_ANSWER,
    DirectRoute,
    LimitedHttpProtocol,
    Limits,
    LostConnection,
    limited_protocol,
)

HEAD_TIMEOUT_S = 0.001
BODY_TIMEOUT_S = 0.002  # apart from the head's, so a test can tell the two timers apart
KEEP_ALIVE_S = 5
REQUEST_ID = "0123456789abcdef0123456789abcdef"
#: What uvicorn's server puts before every answer's own headers.
DEFAULT_HEADERS = [(b"date", b"Mon, 01 Jan 2024 00:00:00 GMT"), (b"server", b"uvicorn")]
DEFAULT_LINES = b"date: Mon, 01 Jan 2024 00:00:00 GMT\r\nserver: uvicorn\r\n"

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\n" + DEFAULT_LINES + b"content-length: 2\r\n\r\nok"


class MockTransport:
    """Records what the protocol writes and whether it closed the connection."""

    def __init__(self) -> None:
        self.buffer = b""
        self.closed = False
        self.read_paused = False

    def get_extra_info(self, key: str, default: Any = None) -> Any:
        """The addresses uvicorn puts in the scope; no socket, no TLS."""
        info = {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}
        return info.get(key, default)

    def write(self, data: bytes) -> None:
        """Record ``data``: nothing may be written after close."""
        assert not self.closed, f"written after close: {data!r}"
        self.buffer += data

    def close(self) -> None:
        """Mark closed (idempotent, as asyncio's transports are)."""
        self.closed = True

    def is_closing(self) -> bool:
        """Whether :meth:`close` was called."""
        return self.closed

    def can_write_eof(self) -> bool:
        """No half-close: the protocol closes at once (:class:`HalfClosingTransport` can)."""
        return False

    def pause_reading(self) -> None:
        """Record uvicorn's flow control."""
        self.read_paused = True

    def resume_reading(self) -> None:
        """Record uvicorn's flow control."""
        self.read_paused = False


class MockTimerHandle:
    """A ``call_later`` timer that runs only when a test fires it; due at ``when`` on the
    loop's clock."""

    def __init__(self, loop: MockLoop, delay: float, callback: Callable[..., None], args: Any):
        self.loop, self.delay, self.callback, self.args = loop, delay, callback, args
        self.when = loop.now + delay
        self.cancelled = False

    def cancel(self) -> None:
        """Unschedule it, as ``asyncio.TimerHandle.cancel`` does."""
        if not self.cancelled:
            self.cancelled = True
            self.loop.timers.remove(self)

    def fire(self) -> None:
        """Run it now, as the loop would once ``delay`` has passed (the clock moves on to
        ``when``)."""
        self.cancel()
        self.loop.now = max(self.loop.now, self.when)
        self.callback(*self.args)


class MockLoop:
    """Records timers (see :meth:`fire`); runs the ASGI tasks on the test's real loop, so that a
    test can fire a deadline while the application awaits ``receive()``. Its clock
    (:meth:`time`) stands still but for what a test moves: :attr:`now`, or a timer fired."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[MockTimerHandle] = []
        #: The delay of every timer scheduled so far, pending or not, in order.
        self.scheduled: list[float] = []
        self.tasks: list[asyncio.Task[None]] = []

    def call_later(
        self, delay: float, callback: Callable[..., None], *args: Any
    ) -> MockTimerHandle:
        """Record a timer instead of scheduling it."""
        handle = MockTimerHandle(self, delay, callback, args)
        self.timers.append(handle)
        self.scheduled.append(delay)
        return handle

    def time(self) -> float:
        """The loop's clock, s."""
        return self.now

    def create_task(self, coroutine: Any, **kwargs: Any) -> asyncio.Task[None]:
        """Run an ASGI cycle as a real task, kept for :meth:`finish`."""
        task = asyncio.get_running_loop().create_task(coroutine, **kwargs)
        self.tasks.append(task)
        return task

    def timer(self, protocol: HttpToolsProtocol, delay: float) -> MockTimerHandle:
        """``protocol``'s one pending timer of ``delay`` seconds."""
        found = [
            t
            for t in self.timers
            if getattr(t.callback, "__self__", None) is protocol and t.delay == delay
        ]
        assert len(found) == 1, f"pending timers: {[(t.callback, t.delay) for t in self.timers]}"
        return found[0]

    def fire(self, protocol: HttpToolsProtocol, delay: float) -> None:
        """Fire ``protocol``'s pending timer of ``delay`` seconds, as if that much time passed."""
        self.timer(protocol, delay).fire()

    async def finish(self) -> None:
        """Let every ASGI task run to its end."""
        await asyncio.wait_for(asyncio.gather(*self.tasks), 5)


class App:
    """A tiny ASGI application: reads the whole body, recording each ``receive()`` message, then
    answers 200 ``ok``; on ``/early`` it answers 422 at once, without reading the body; on
    ``/hold`` it reads the whole body, then holds it until the test puts a token in
    :attr:`gate` (as gre's app holds a body queued for the replicas)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.paths: list[str] = []  # of every request it was called for
        self.scopes: list[Scope] = []  # and its scope
        self.receiving = asyncio.Event()  # set while it awaits receive()
        self.holding = asyncio.Event()  # set while a /hold request waits for the gate
        self.gate: asyncio.Queue[None] = asyncio.Queue()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.paths.append(scope["path"])
        self.scopes.append(scope)
        if scope["path"] == "/early":
            await answer(send, 422, b"no")
            return
        while True:
            self.receiving.set()
            message = await receive()
            self.receiving.clear()
            self.messages.append(dict(message))
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        if scope["path"] == "/hold":
            self.holding.set()
            await self.gate.get()
            self.holding.clear()
        await answer(send, 200, b"ok")  # dropped by uvicorn after a disconnect


async def answer(send: Send, status: int, body: bytes) -> None:
    """Send a whole response of ``status`` and ``body``."""
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Harness:
    """One uvicorn server's state (real ``Config`` and ``ServerState``) around a mock loop;
    :meth:`connect` opens connections to it. ``app``: the ASGI application (default an
    :class:`App`); ``direct``: the requests the protocol answers itself."""

    def __init__(
        self,
        *,
        app: Any = None,
        direct: DirectRoute | None = None,
        whole_answers: bool = False,
        **limits: Any,
    ) -> None:
        self.app = app or App()
        self.rejected: list[str] = []
        settings = {"header_timeout_s": HEAD_TIMEOUT_S, "body_timeout_s": BODY_TIMEOUT_S, **limits}
        self.limits = Limits(**settings, on_reject=self.rejected.append)
        self.loop = MockLoop()
        self.config = Config(
            app=self.app,
            http=limited_protocol(self.limits, direct, whole_answers),
            timeout_keep_alive=KEEP_ALIVE_S,
            log_config=None,  # leave the test process's logging alone
        )
        self.config.load()
        self.server_state = ServerState()
        self.server_state.default_headers = list(DEFAULT_HEADERS)

    def connect(
        self, transport: MockTransport | None = None
    ) -> tuple[LimitedHttpProtocol, MockTransport]:
        """A new connection, as uvicorn's server makes one: its protocol and transport (a
        :class:`MockTransport` unless given)."""
        protocol_cls = self.config.http_protocol_class
        assert issubclass(protocol_cls, LimitedHttpProtocol)
        protocol = protocol_cls(
            config=self.config,
            server_state=self.server_state,
            app_state={},
            _loop=self.loop,  # type: ignore[arg-type]
        )
        transport = transport or MockTransport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        return protocol, transport


@pytest.fixture(autouse=True)
def fixed_request_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every refusal's ``X-Request-Id`` is :data:`REQUEST_ID`, so answers compare byte for byte."""
    monkeypatch.setattr(gre.http.protocol, "new_request_id", lambda: REQUEST_ID)


def refusal(status: bytes, body: bytes, *extra: bytes) -> bytes:
    """The exact bytes of a refusal the protocol writes itself: ``status`` line, uvicorn's default
    headers, the JSON ``body``'s type and length, ``extra`` header lines, ``Connection: close``
    and the request id."""
    return b"".join(
        [
            b"HTTP/1.1 " + status + b"\r\n",
            DEFAULT_LINES,
            b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body),
            *extra,
            b"connection: close\r\nx-request-id: " + REQUEST_ID.encode() + b"\r\n\r\n",
            body,
        ]
    )


def json_body(raw: bytes) -> Any:
    """The JSON body of one raw response."""
    return json.loads(raw.partition(b"\r\n\r\n")[2])


def test_head_deadline_before_the_head_completes_gets_408_and_closes() -> None:
    server = Harness()
    protocol, transport = server.connect()
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaa")
    server.loop.fire(protocol, HEAD_TIMEOUT_S)
    message = "the request head (request line and headers) did not arrive within 0.001 s"
    body = b'{"error":"request_timeout","message":"%s"}' % message.encode()
    assert transport.buffer == refusal(b"408 Request Timeout", body)
    assert json_body(transport.buffer) == {"error": "request_timeout", "message": message}
    assert transport.closed
    assert server.rejected == ["request_timeout"]
    protocol.data_received(b"\r\n\r\n")  # the rest of the head, too late: ignored
    assert server.app.messages == []
    assert transport.buffer == refusal(b"408 Request Timeout", body)


async def test_body_deadline_mid_body_gets_408_and_the_app_sees_a_disconnect() -> None:
    server = Harness()
    protocol, transport = server.connect()
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\npart")
    await server.app.receiving.wait()  # it has read "part" and awaits the rest
    server.loop.fire(protocol, BODY_TIMEOUT_S)
    message = "the request body did not arrive within 0.002 s"
    body = b'{"error":"request_timeout","message":"%s"}' % message.encode()
    assert transport.buffer == refusal(b"408 Request Timeout", body)
    assert transport.closed
    await server.loop.finish()
    assert server.app.messages == [
        {"type": "http.request", "body": b"part", "more_body": True},
        {"type": "http.disconnect"},
    ]
    assert transport.buffer == refusal(b"408 Request Timeout", body), "the app's answer is dropped"
    assert server.rejected == ["request_timeout"]


async def test_body_deadline_after_an_early_answer_closes_without_a_second_answer() -> None:
    server = Harness()
    protocol, transport = server.connect()
    protocol.data_received(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nx")
    await server.loop.finish()
    phrase = http.HTTPStatus(422).phrase.encode()  # its wording varies with Python's version
    early = b"HTTP/1.1 422 " + phrase + b"\r\n" + DEFAULT_LINES + b"content-length: 2\r\n\r\nno"
    assert transport.buffer == early
    protocol.data_received(b"x" * 100)  # the body trickles on
    server.loop.fire(protocol, BODY_TIMEOUT_S)
    assert transport.buffer == early
    assert transport.closed
    assert server.rejected == ["request_timeout"]


async def test_kept_alive_head_deadline_runs_from_the_next_requests_first_byte() -> None:
    server = Harness()
    protocol, transport = server.connect()
    protocol.data_received(GET)
    await server.loop.finish()
    assert transport.buffer == OK
    # Idle between requests only uvicorn's keep-alive timer runs, not a head deadline.
    assert [t.delay for t in server.loop.timers] == [KEEP_ALIVE_S]
    protocol.data_received(b"GET / HTTP/1.1\r\n")
    server.loop.fire(protocol, HEAD_TIMEOUT_S)
    message = "the request head (request line and headers) did not arrive within 0.001 s"
    body = b'{"error":"request_timeout","message":"%s"}' % message.encode()
    assert transport.buffer == OK + refusal(b"408 Request Timeout", body)
    assert transport.closed
    assert server.rejected == ["request_timeout"]


async def test_a_request_that_arrives_in_one_read_arms_no_deadline() -> None:
    server = Harness()
    protocol, transport = server.connect()
    assert server.loop.scheduled == [HEAD_TIMEOUT_S]  # the first head's, from the connection
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody")
    await server.loop.finish()
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody")
    await server.loop.finish()
    assert transport.buffer == OK + OK
    # Whole in one read, neither request armed a head or body deadline; the connection's
    # first head deadline was cancelled, and only uvicorn's keep-alive timer is pending.
    assert [d for d in server.loop.scheduled if d != KEEP_ALIVE_S] == [HEAD_TIMEOUT_S]
    assert [t.delay for t in server.loop.timers] == [KEEP_ALIVE_S]


async def test_a_body_over_many_reads_keeps_the_deadline_its_head_began() -> None:
    server = Harness()
    protocol, transport = server.connect()
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\npart")
    deadline = server.loop.timer(protocol, BODY_TIMEOUT_S)
    protocol.data_received(b"pa")  # more body: the deadline still runs from the head's end
    protocol.data_received(b"rt")
    assert server.loop.timer(protocol, BODY_TIMEOUT_S) is deadline
    assert server.loop.scheduled == [HEAD_TIMEOUT_S, BODY_TIMEOUT_S]
    protocol.data_received(b"!!")  # the end of the body: no deadline runs
    assert deadline.cancelled
    await server.loop.finish()
    assert transport.buffer == OK
    assert [t.delay for t in server.loop.timers] == [KEEP_ALIVE_S]


async def test_a_pipelined_body_begun_in_the_last_bodys_read_gets_its_own_deadline() -> None:
    server = Harness()
    protocol, transport = server.connect()
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbo")
    first = server.loop.timer(protocol, BODY_TIMEOUT_S)
    # The first body ends and a second request's body begins, in one read.
    protocol.data_received(b"dyPOST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbo")
    second = server.loop.timer(protocol, BODY_TIMEOUT_S)
    assert first.cancelled
    assert second is not first
    second.fire()
    assert transport.closed
    assert server.rejected == ["request_timeout"]


def test_connection_that_sent_nothing_is_closed_without_an_answer() -> None:
    server = Harness()
    protocol, transport = server.connect()
    server.loop.fire(protocol, HEAD_TIMEOUT_S)
    assert transport.closed
    assert transport.buffer == b""
    assert server.rejected == ["request_timeout"]


async def test_head_deadline_while_answering_lets_the_answer_finish_then_closes() -> None:
    server = Harness()
    protocol, transport = server.connect()
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n")
    await server.app.receiving.wait()
    protocol.data_received(b"bodyGET / HTTP/1.1\r\n")  # the body, then a pipelined head stalls
    server.loop.fire(protocol, HEAD_TIMEOUT_S)
    assert not transport.closed
    await server.loop.finish()
    assert transport.buffer == OK[:-4] + b"connection: close\r\n\r\nok"
    assert transport.closed
    assert server.rejected == ["request_timeout"]


HUGE_HEAD = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n"
TOO_LARGE = b'{"error":"headers_too_large","message":"the request head exceeds 1024 bytes"}'


@pytest.mark.parametrize("chunk", [len(HUGE_HEAD), 100, 1], ids=["one read", "100 B", "1 B"])
async def test_head_over_max_header_bytes_gets_431(chunk: int) -> None:
    server = Harness(max_header_bytes=1024)
    protocol, transport = server.connect()
    for start in range(0, len(HUGE_HEAD), chunk):
        protocol.data_received(HUGE_HEAD[start : start + chunk])
    assert transport.buffer == refusal(b"431 Request Header Fields Too Large", TOO_LARGE)
    assert json_body(transport.buffer) == {
        "error": "headers_too_large",
        "message": "the request head exceeds 1024 bytes",
    }
    assert transport.closed
    assert server.rejected == ["headers_too_large"]
    assert server.app.messages == []
    other, other_transport = server.connect()  # the server serves others as before
    other.data_received(GET)
    await server.loop.finish()
    assert other_transport.buffer == OK


def test_malformed_request_gets_json_400() -> None:
    server = Harness()
    protocol, transport = server.connect()
    protocol.data_received(b"\x00\x01 not HTTP at all\r\n\r\n")
    message = "malformed HTTP request (Invalid HTTP request received)"
    body = b'{"error":"bad_request","message":"%s"}' % message.encode()
    assert transport.buffer == refusal(b"400 Bad Request", body)
    assert json_body(transport.buffer) == {"error": "bad_request", "message": message}
    assert transport.closed
    assert server.rejected == ["bad_request"]


async def test_over_max_connections_an_idle_kept_alive_connection_makes_room() -> None:
    server = Harness(max_connections=2)
    busy, busy_transport = server.connect()
    busy.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\npart")
    idle, idle_transport = server.connect()
    idle.data_received(GET)
    await server.app.receiving.wait()
    await asyncio.wait_for(server.loop.tasks[1], 5)  # the idle one's request is answered
    assert idle_transport.buffer == OK
    assert not idle_transport.closed
    new, new_transport = server.connect()
    assert idle_transport.closed, "the idle connection was not closed to make room"
    assert idle_transport.buffer == OK
    assert not busy_transport.closed
    new.data_received(GET)
    busy.data_received(b"123456")
    await server.loop.finish()
    assert new_transport.buffer == OK
    assert busy_transport.buffer == OK
    assert server.rejected == []


async def test_over_max_connections_all_busy_the_new_request_gets_503() -> None:
    server = Harness(max_connections=2)
    busy = [server.connect() for _ in range(2)]
    for protocol, _ in busy:  # each with a request in progress, its body unfinished
        protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\npart")
    new, new_transport = server.connect()
    assert not any(transport.closed for _, transport in busy)
    new.data_received(GET)
    await asyncio.wait_for(server.loop.tasks[-1], 5)
    body = b'{"error":"too_many_connections","message":"every connection is busy with a request;'
    body += b' retry shortly"}'
    assert new_transport.buffer == b"".join(
        [
            b"HTTP/1.1 503 Service Unavailable\r\n",
            DEFAULT_LINES,
            b"retry-after: 1\r\nconnection: close\r\nx-request-id: ",
            REQUEST_ID.encode(),
            b"\r\ncontent-length: %d\r\ncontent-type: application/json\r\n\r\n" % len(body),
            body,
        ]
    )
    assert json_body(new_transport.buffer) == {
        "error": "too_many_connections",
        "message": "every connection is busy with a request; retry shortly",
    }
    assert new_transport.closed
    assert server.rejected == ["too_many_connections"]
    assert not any(transport.closed for _, transport in busy)
    for protocol, _ in busy:
        protocol.data_received(b"123456")
    await server.loop.finish()
    assert all(transport.buffer == OK for _, transport in busy)


async def test_answer_before_the_body_ended_rearms_the_keep_alive_timer() -> None:
    server = Harness()
    protocol, transport = server.connect()
    protocol.data_received(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    await server.loop.finish()
    assert transport.buffer.startswith(b"HTTP/1.1 422 ")
    protocol.data_received(b"defghij")  # the body ends; uvicorn's data_received disarmed the timer
    keep_alive: object = protocol.timeout_keep_alive_task
    assert keep_alive is not None
    assert keep_alive is server.loop.timer(protocol, KEEP_ALIVE_S)
    assert not transport.closed
    server.loop.fire(protocol, KEEP_ALIVE_S)
    assert transport.closed
    assert server.rejected == []


async def test_one_keep_alive_timer_serves_a_connection_across_requests() -> None:
    server = Harness()
    protocol, transport = server.connect()
    for _ in range(3):
        protocol.data_received(GET)
        await server.loop.finish()
    assert transport.buffer == OK * 3
    assert server.loop.scheduled.count(KEEP_ALIVE_S) == 1  # uvicorn's arms one per answer
    server.loop.fire(protocol, KEEP_ALIVE_S)  # idle since the last answer: closed
    assert transport.closed


async def test_a_keep_alive_timer_that_comes_early_waits_for_the_idle_time_left() -> None:
    server = Harness()
    protocol, transport = server.connect()
    protocol.data_received(GET)
    await server.loop.finish()
    first = server.loop.timer(protocol, KEEP_ALIVE_S)
    server.loop.now = 3.0  # a second request, answered 3 s into the idle time
    protocol.data_received(GET)
    await server.loop.finish()
    first.fire()  # at 5 s: idle for 2 s only
    assert not transport.closed
    rest = server.loop.timer(protocol, 3.0)  # the idle time left: 3 + 5 - 5 s
    rest.fire()  # at 8 s: idle for 5 s
    assert transport.closed
    assert transport.buffer == OK * 2


async def test_a_keep_alive_timer_that_comes_while_busy_is_armed_again_by_the_answer() -> None:
    server = Harness()
    protocol, transport = server.connect()
    protocol.data_received(GET)
    await server.loop.finish()
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbo")
    server.loop.fire(protocol, KEEP_ALIVE_S)  # busy with a request: not closed, not re-armed
    assert not transport.closed
    assert [t.delay for t in server.loop.timers] == [BODY_TIMEOUT_S]
    protocol.data_received(b"dy")
    await server.loop.finish()
    assert transport.buffer == OK * 2
    server.loop.fire(protocol, KEEP_ALIVE_S)  # armed by the second answer
    assert transport.closed


async def test_uvicorn_internals_gre_relies_on_exist() -> None:
    """gre/http/protocol.py reads and overrides these; an upgrade that renames one must fail
    here, not in production (then fix protocol.py and raise the bound in pyproject.toml)."""
    version = f"uvicorn {uvicorn.__version__}"
    hint = "gre/http/protocol.py relies on it"
    for method in (
        "connection_made",
        "connection_lost",
        "data_received",
        "on_message_begin",
        "on_url",
        "on_headers_complete",
        "on_body",
        "on_message_complete",
        "on_response_complete",
        "send_400_response",
        "timeout_keep_alive_handler",
        "_unset_keepalive_if_required",  # replaced: the keep-alive timer stays armed
        "_start_asgi_task",  # where a request's turn comes: direct answers start there
    ):
        assert callable(getattr(HttpToolsProtocol, method, None)), f"{version}: {method}; {hint}"
    config = Config(app=App(), log_config=None)
    config.load()
    server_state = ServerState()
    loop = MockLoop()
    protocol = HttpToolsProtocol(
        config=config,
        server_state=server_state,
        app_state={},
        _loop=loop,  # type: ignore[arg-type]
    )
    protocol.connection_made(MockTransport())  # type: ignore[arg-type]
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n")
    for name in (
        "cycle",
        "timeout_keep_alive_task",
        "timeout_keep_alive",
        "server_state",
        "connections",
        "loop",
        "transport",
        "app",
        "headers",
        "pipeline",
    ):
        assert hasattr(protocol, name), f"{version}: HttpToolsProtocol.{name}; {hint}"
    assert protocol.connections is server_state.connections, f"{version}: connections; {hint}"
    assert isinstance(protocol.server_state.default_headers, list), f"{version}: {hint}"
    assert isinstance(STATUS_LINE[200], bytes), f"{version}: STATUS_LINE; {hint}"
    for name in (
        "response_complete",
        "response_started",
        "keep_alive",
        "disconnected",
        "waiting_for_100_continue",
        "body",
        "more_body",
        "on_response",
    ):
        assert hasattr(protocol.cycle, name), f"{version}: RequestResponseCycle.{name}; {hint}"
    assert isinstance(protocol.cycle.message_event, asyncio.Event), f"{version}: {hint}"
    for task in loop.tasks:  # the application awaits a body that never comes
        task.cancel()


# The body budget (max_inflight_body_bytes): 100 bytes here, so that bodies of tens of bytes
# fill it.

BUDGET = 100
RETRY = b"retry-after: 1\r\n"
NO_ROOM = (
    "the body's %d bytes do not fit in the 100 bytes that bodies in flight may hold "
    "(max_inflight_body_bytes); retry shortly"
)
CUT_TO_MAKE_ROOM = (
    "the unfinished body was cut off to make room for other requests: bodies in flight may "
    "hold 100 bytes (max_inflight_body_bytes); retry shortly"
)
GREW_PAST = (
    "the body grew past what fits in the 100 bytes that bodies in flight may hold "
    "(max_inflight_body_bytes); retry shortly"
)


def budgeted(**limits: Any) -> Harness:
    """A :class:`Harness` whose body budget holds :data:`BUDGET` bytes."""
    return Harness(budget=BodyBudget(BUDGET), **limits)


def post(length: int, body: bytes = b"", path: str = "/") -> bytes:
    """A POST head declaring ``length`` bytes, then ``body``."""
    head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (path.encode(), length)
    return head + body


CHUNKED = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def error_json(code: str, message: str) -> bytes:
    """gre's JSON error body, as gre.http.errors.error_body writes it."""
    return json.dumps({"error": code, "message": message}, separators=(",", ":")).encode()


def app_refusal(body: bytes) -> bytes:
    """The exact bytes of a 503 that a swapped-in application answers (Starlette's
    ``Response``: its headers, then content-length and content-type), closing."""
    return b"".join(
        [
            b"HTTP/1.1 503 Service Unavailable\r\n",
            DEFAULT_LINES,
            RETRY,
            b"connection: close\r\nx-request-id: ",
            REQUEST_ID.encode(),
            b"\r\ncontent-length: %d\r\ncontent-type: application/json\r\n\r\n" % len(body),
            body,
        ]
    )


async def test_declared_length_that_fits_is_held_until_the_answer() -> None:
    server = budgeted()
    protocol, transport = server.connect()
    protocol.data_received(post(60, b"part"))
    assert server.limits.budget.held == 60  # what it declared, not what arrived
    await server.app.receiving.wait()
    protocol.data_received(b"x" * 56)
    await server.loop.finish()
    assert transport.buffer == OK
    assert server.limits.budget.held == 0
    assert server.rejected == []


async def test_declared_length_that_does_not_fit_gets_503_and_the_app_is_never_called() -> None:
    server = budgeted()
    holder, _ = server.connect()
    holder.data_received(post(40, b"part"))  # an upload of 40 does not yield to one of 70
    protocol, transport = server.connect()
    protocol.data_received(post(70, b"x" * 70))
    await asyncio.wait_for(server.loop.tasks[-1], 5)
    body = error_json("too_many_bytes", NO_ROOM % 70)
    assert transport.buffer == app_refusal(body)
    assert json_body(transport.buffer) == {"error": "too_many_bytes", "message": NO_ROOM % 70}
    assert transport.closed
    assert server.app.paths == ["/"], "the refused request reached the application"
    assert server.limits.budget.held == 40  # the refused request reserved nothing
    assert server.rejected == ["too_many_bytes"]
    holder.connection_lost(None)
    assert server.limits.budget.held == 0
    await server.loop.finish()


async def test_declared_length_over_the_whole_budget_gets_503() -> None:
    server = budgeted()
    protocol, transport = server.connect()
    protocol.data_received(post(BUDGET + 1))
    await server.loop.finish()
    assert transport.buffer == app_refusal(error_json("too_many_bytes", NO_ROOM % (BUDGET + 1)))
    assert transport.closed
    assert server.app.paths == []
    assert server.rejected == ["too_many_bytes"]


async def test_declared_length_reserves_at_most_max_body_bytes() -> None:
    # The application answers a body over max_body_bytes 413 without reading it.
    server = budgeted(max_body_bytes=50)
    protocol, transport = server.connect()
    protocol.data_received(post(10_000, b"x" * 10, path="/early"))
    assert server.limits.budget.held == 50
    await server.loop.finish()
    assert transport.buffer.startswith(b"HTTP/1.1 422 ")
    assert server.limits.budget.held == 0
    assert server.rejected == []


async def test_chunk_that_would_cross_the_budget_cuts_the_request_off() -> None:
    server = budgeted()
    protocol, transport = server.connect()
    protocol.data_received(CHUNKED + chunk(b"a" * 60))
    assert server.limits.budget.held == 60  # chunks reserve as they arrive
    await server.app.receiving.wait()
    protocol.data_received(chunk(b"b" * 60))
    body = error_json("too_many_bytes", GREW_PAST)
    assert transport.buffer == refusal(b"503 Service Unavailable", body, RETRY)
    assert transport.closed
    assert server.limits.budget.held == 0
    await server.loop.finish()
    assert server.app.messages == [
        {"type": "http.request", "body": b"a" * 60, "more_body": True},
        {"type": "http.disconnect"},
    ]
    assert server.rejected == ["too_many_bytes"]


async def test_chunks_after_an_early_answer_hold_nothing() -> None:
    server = budgeted()
    protocol, transport = server.connect()
    protocol.data_received(CHUNKED.replace(b"POST /", b"POST /early") + chunk(b"a" * 30))
    await server.loop.finish()
    assert transport.buffer.startswith(b"HTTP/1.1 422 ")
    assert server.limits.budget.held == 0
    protocol.data_received(chunk(b"b" * 90))  # uvicorn discards it: nothing to count
    assert server.limits.budget.held == 0
    assert not transport.closed


async def test_budget_is_released_when_the_connection_is_lost_mid_body() -> None:
    server = budgeted()
    protocol, _ = server.connect()
    protocol.data_received(post(80, b"part"))
    await server.app.receiving.wait()
    protocol.connection_lost(None)
    assert server.limits.budget.held == 0
    await server.loop.finish()
    assert server.app.messages[-1] == {"type": "http.disconnect"}


async def test_budget_is_released_when_the_body_times_out() -> None:
    server = budgeted()
    protocol, transport = server.connect()
    protocol.data_received(post(80, b"part"))
    await server.app.receiving.wait()
    server.loop.fire(protocol, BODY_TIMEOUT_S)
    assert transport.buffer.startswith(b"HTTP/1.1 408 ")
    assert server.limits.budget.held == 0
    protocol.connection_lost(None)  # then the transport's close reports the loss
    assert server.limits.budget.held == 0
    await server.loop.finish()
    assert server.rejected == ["request_timeout"]


async def test_small_newcomer_cuts_off_the_largest_unfinished_upload() -> None:
    server = budgeted()
    small, small_transport = server.connect()
    small.data_received(post(20, b"part"))
    large, large_transport = server.connect()
    large.data_received(post(70, b"part"))  # 90 of 100 held, both stalled
    await asyncio.sleep(0)
    newcomer, newcomer_transport = server.connect()
    newcomer.data_received(post(30))  # 30 does not fit in 10: the 70 make room
    body = error_json("too_many_bytes", CUT_TO_MAKE_ROOM)
    assert large_transport.buffer == refusal(b"503 Service Unavailable", body, RETRY)
    assert large_transport.closed
    assert not small_transport.closed
    assert server.limits.budget.held == 50
    newcomer.data_received(b"x" * 30)
    small.data_received(b"y" * 16)
    await server.loop.finish()
    assert newcomer_transport.buffer == OK
    assert small_transport.buffer == OK
    assert {"type": "http.disconnect"} in server.app.messages  # the cut-off one's
    assert server.limits.budget.held == 0
    assert server.rejected == ["too_many_bytes"]


async def test_chunk_makes_room_as_a_declared_length_does() -> None:
    server = budgeted()
    large, large_transport = server.connect()
    large.data_received(post(90, b"part"))
    newcomer, newcomer_transport = server.connect()
    newcomer.data_received(CHUNKED + chunk(b"a" * 20) + b"0\r\n\r\n")
    assert large_transport.closed
    assert large_transport.buffer.startswith(b"HTTP/1.1 503 ")
    await server.loop.finish()
    assert newcomer_transport.buffer == OK
    assert server.limits.budget.held == 0
    assert server.rejected == ["too_many_bytes"]


@pytest.mark.parametrize("held", [60, 50], ids=["equal", "smaller"])
async def test_an_upload_no_larger_than_the_newcomer_is_not_cut_off(held: int) -> None:
    server = budgeted()
    holder, holder_transport = server.connect()
    holder.data_received(post(held, b"part"))
    newcomer, newcomer_transport = server.connect()
    newcomer.data_received(post(60))
    await asyncio.wait_for(server.loop.tasks[-1], 5)
    assert newcomer_transport.buffer == app_refusal(error_json("too_many_bytes", NO_ROOM % 60))
    assert not holder_transport.closed
    holder.data_received(b"x" * (held - 4))
    await server.loop.finish()
    assert holder_transport.buffer == OK
    assert server.limits.budget.held == 0
    assert server.rejected == ["too_many_bytes"]


async def test_complete_bodies_waiting_for_their_answer_are_never_cut_off() -> None:
    server = budgeted()
    whole, whole_transport = server.connect()
    whole.data_received(post(80, b"x" * 80, path="/hold"))
    await server.app.holding.wait()  # its body is whole, its answer pending
    newcomer, newcomer_transport = server.connect()
    newcomer.data_received(post(30))
    await asyncio.wait_for(server.loop.tasks[-1], 5)
    assert newcomer_transport.buffer == app_refusal(error_json("too_many_bytes", NO_ROOM % 30))
    assert not whole_transport.closed
    assert server.limits.budget.held == 80  # held until answered
    server.app.gate.put_nowait(None)
    await server.loop.finish()
    assert whole_transport.buffer == OK
    assert server.limits.budget.held == 0


async def test_pipelined_requests_each_hold_their_body_until_their_own_answer() -> None:
    server = budgeted()
    protocol, transport = server.connect()
    first, second = post(10, b"a" * 10, path="/hold"), post(20, b"b" * 20, path="/hold")
    protocol.data_received(first + second)  # the second waits behind the first
    await server.app.holding.wait()
    assert server.limits.budget.held == 30
    server.app.gate.put_nowait(None)
    while server.app.paths != ["/hold", "/hold"] or not server.app.holding.is_set():
        await asyncio.sleep(0)  # the first is answered, the second starts and holds
    assert server.limits.budget.held == 20
    server.app.gate.put_nowait(None)
    await server.loop.finish()
    assert transport.buffer == OK + OK
    assert server.limits.budget.held == 0


async def test_queued_pipelined_request_is_not_cut_off() -> None:
    # Cutting off a connection whose unfinished body waits behind a whole one would take
    # the whole one with it.
    server = budgeted()
    protocol, transport = server.connect()
    protocol.data_received(post(10, b"a" * 10, path="/hold") + post(80, b"part"))
    await server.app.holding.wait()
    newcomer, newcomer_transport = server.connect()
    newcomer.data_received(post(20))
    await asyncio.wait_for(server.loop.tasks[-1], 5)
    assert newcomer_transport.buffer.startswith(b"HTTP/1.1 503 ")
    assert not transport.closed
    server.app.gate.put_nowait(None)  # the whole one is answered, then the other is read
    await server.app.receiving.wait()
    protocol.data_received(b"x" * 76)
    await server.loop.finish()
    assert transport.buffer == OK + OK
    assert server.limits.budget.held == 0


def lost_connection(scope: Scope) -> LostConnection:
    watch = scope["extensions"][LOST_CONNECTION]
    assert isinstance(watch, LostConnection)
    return watch


async def test_a_request_waiting_for_its_answer_is_told_when_its_connection_is_lost() -> None:
    """gre's classify route waits with no receive() task: the protocol calls it back."""
    server = Harness()
    protocol, transport = server.connect()
    protocol.data_received(post(4, b"abcd", path="/hold"))
    await server.app.holding.wait()  # its body is whole, its answer pending
    watch = lost_connection(server.app.scopes[0])
    calls: list[str] = []
    watch.callback = lambda: calls.append("lost")
    assert not watch.lost
    protocol.connection_lost(None)
    assert (watch.lost, calls) == (True, ["lost"])
    assert watch.callback is None
    watch.fire()  # once only
    assert calls == ["lost"]
    server.app.gate.put_nowait(None)
    await server.loop.finish()
    assert transport.buffer == b""  # its answer was dropped: nobody listens


async def test_each_request_has_its_own_watch_and_an_answered_one_is_not_told() -> None:
    server = Harness()
    protocol, transport = server.connect()
    protocol.data_received(post(2, b"ab") + post(2, b"cd"))  # kept alive, pipelined
    await server.loop.finish()
    while len(server.app.scopes) < 2:
        await asyncio.sleep(0)
    await server.loop.finish()
    assert transport.buffer == OK + OK
    first, second = (lost_connection(scope) for scope in server.app.scopes)
    assert first is not second
    calls: list[str] = []
    second.callback = lambda: calls.append("lost")
    protocol.connection_lost(None)  # after both answers: nothing was lost
    assert (second.lost, calls) == (False, [])


class HalfClosingTransport(MockTransport):
    """A transport that can send a FIN and go on reading, as uvloop's TCP transports."""

    def __init__(self) -> None:
        super().__init__()
        self.eof = False

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        assert not self.closed
        self.eof = True

    def write(self, data: bytes) -> None:
        assert not self.eof, f"written after the FIN: {data!r}"
        super().write(data)


def test_a_cut_off_connection_lingers_reading_before_it_closes() -> None:
    """Answered, then FIN, then LINGER_S of reading and dropping before the close: a client
    still sending gets no RST, which could destroy the answer before it reads it."""
    server = Harness()
    transport = HalfClosingTransport()
    protocol, _ = server.connect(transport)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaa")
    server.loop.fire(protocol, HEAD_TIMEOUT_S)
    assert transport.buffer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert (transport.eof, transport.closed) == (True, False)
    protocol.data_received(b"a" * 1000)  # the client goes on: read and dropped
    assert server.app.messages == []
    (linger,) = [t for t in server.loop.timers if t.delay == gre.http.protocol.LINGER_S]
    linger.fire()
    assert transport.closed


def body_ready(protocol: LimitedHttpProtocol) -> bool:
    """The current request's BODY_READY answer."""
    extensions: dict[str, Any] = protocol.cycle.scope["extensions"]
    answer: bool = extensions[BODY_READY]()
    return answer


async def test_each_request_says_whether_its_body_has_begun() -> None:
    """BODY_READY: an HTTP worker hands a head on at once when no body byte has come. Asked
    before the application's task has run, as the worker asks it first."""
    server = Harness()
    (waiting, _), (started, _), (bodiless, _) = (server.connect() for _ in range(3))
    waiting.data_received(post(10))
    started.data_received(post(10, b"part"))
    bodiless.data_received(GET)
    assert [body_ready(p) for p in (waiting, started, bodiless)] == [False, True, True]
    waiting.data_received(b"0123456789")
    assert body_ready(waiting) is True
    started.data_received(b"012345")
    await server.loop.finish()


class WholeAnswerApp:
    """Answers ``ok`` through :data:`WHOLE_ANSWER` when the request has one and it accepts,
    else through ``send``, recording ``METHOD path`` of each it declined; ``/unframed``
    answers without ``content-length``."""

    def __init__(self) -> None:
        self.declined: list[str] = []
        self.offered: list[bool] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        whole = scope["extensions"].get(WHOLE_ANSWER)
        self.offered.append(whole is not None)
        headers = [] if scope["path"] == "/unframed" else [(b"content-length", b"2")]
        if whole is not None and whole(200, headers, b"ok"):
            return
        self.declined.append(f"{scope['method']} {scope['path']}")
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})


class CountingTransport(MockTransport):
    """A :class:`MockTransport` that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> None:
        super().write(data)
        self.writes += 1


async def test_a_whole_answer_leaves_in_one_write_and_the_connection_goes_on() -> None:
    app = WholeAnswerApp()
    server = Harness(app=app, whole_answers=True)
    protocol, transport = server.connect(CountingTransport())
    protocol.data_received(post(4, b"data") + post(4, b"more"))  # two, pipelined
    await server.loop.finish()
    assert transport.buffer == OK + OK
    assert isinstance(transport, CountingTransport)
    assert transport.writes == 2
    assert app.declined == []
    assert not transport.closed


async def test_a_whole_answer_declines_what_uvicorn_must_frame_itself() -> None:
    app = WholeAnswerApp()
    server = Harness(app=app, whole_answers=True)
    head, head_transport = server.connect()
    head.data_received(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    unframed, unframed_transport = server.connect()
    unframed.data_received(b"GET /unframed HTTP/1.1\r\nHost: x\r\n\r\n")
    await server.loop.finish()
    assert sorted(app.declined) == ["GET /unframed", "HEAD /"]
    # uvicorn's own framing: no body for HEAD, chunks without a length.
    assert head_transport.buffer == OK.removesuffix(b"ok")
    assert b"transfer-encoding: chunked\r\n" in unframed_transport.buffer
    assert unframed_transport.buffer.endswith(b"\r\n2\r\nok\r\n0\r\n\r\n")


async def test_requests_have_a_whole_answer_only_when_the_protocol_gives_them_one() -> None:
    app = WholeAnswerApp()
    server = Harness(app=app)
    protocol, transport = server.connect()
    protocol.data_received(GET)
    await server.loop.finish()
    assert app.offered == [False]
    assert transport.buffer == OK
