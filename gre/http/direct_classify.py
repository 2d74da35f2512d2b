"""``POST /api/classify`` answered by the connection itself: no ASGI task, no ``receive`` or
``send`` coroutines, one write per answer.

Through ASGI, each classify request costs an asyncio task, a coroutine per layer, a message
dict per body chunk and per answer part, two writes (head, then body) and uvicorn's header
checks: about as much CPU as the rest of the front end's work for a small image. Here
:class:`gre.http.protocol.LimitedHttpProtocol` hands a classify request's head, body chunks
and end to a :class:`DirectClassify`, which drives the same
:class:`gre.http.classify_exchange.ClassifyExchange` as the ASGI route, waits for the
scheduler by callback (:meth:`gre.service.Service.watch`) and writes the answer through
:meth:`LimitedHttpProtocol.answer_directly`. The connection's limits, deadlines, body budget,
pipelining and keep-alive stay the protocol's; a client sees the same answers, headers,
errors, metrics and log lines as through the ASGI route (``tests/http`` runs the end-to-end
tests through both).

Requests the connection does not take (other routes, ``Expect: 100-continue``, a client
that is not reading its answers: the transport's buffer is full) go to the ASGI application
as before.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.responses import Response
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from gre.batching.queue import Pending
from gre.batching.scheduler import Completed
from gre.http.classify_exchange import (
    SCHEDULER_REFUSALS,
    Checked,
    ClassifyExchange,
    Sent,
    sent_of,
)
from gre.http.errors import ApiError
from gre.http.protocol import LOST_CONNECTION, LostConnection
from gre.http.request_parts import refusal
from gre.service import Service

if TYPE_CHECKING:
    from gre.http.protocol import LimitedHttpProtocol

#: What is answered directly: the method and path (exact, as Starlette's router matches it).
METHOD, PATH = "POST", "/api/classify"


class Stage(enum.Enum):
    """Where a :class:`DirectClassify` is: waiting for its turn on the connection, receiving
    its body, queued for the replicas, or done (answered, or its client left)."""

    HEAD = "head"
    BODY = "body"
    QUEUED = "queued"
    DONE = "done"


class ClassifyDirectly:
    """The protocol's :class:`gre.http.protocol.DirectRoute` for ``service``: a
    :class:`DirectClassify` for each ``POST /api/classify`` it can take, else ``None`` (the
    ASGI application answers)."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def __call__(
        self, protocol: LimitedHttpProtocol, cycle: RequestResponseCycle
    ) -> ConnectionClassify | None:
        if not takes(cycle.scope):
            return None
        if cycle.waiting_for_100_continue or protocol.flow.write_paused:
            return None  # uvicorn's receive() and send() handle these
        return ConnectionClassify(protocol, cycle, self.service)


#: Writes a request's whole answer: ``(status, headers, body)``; headers with lower-case
#: names, ``content-length`` among them.
Answer = Callable[[int, list[tuple[bytes, bytes]], bytes], None]


def takes(scope: Mapping[str, Any]) -> bool:
    """Whether ``scope`` is a request :class:`DirectClassify` answers."""
    return bool(scope["path"] == PATH and scope["method"] == METHOD)


class DirectClassify:
    """One classify request answered without ASGI (see the module docstring), whatever
    carries its bytes: its connection (:class:`ConnectionClassify`) or an HTTP worker's bridge
    (:mod:`gre.http.front_ends`).

    :meth:`begin` once the request's turn comes, with the body bytes already there, then
    :meth:`body` for each chunk and :meth:`complete` at its end while :attr:`receiving`;
    ``sent`` is what the exchange reads of its head (:func:`gre.http.classify_exchange.sent_of`),
    ``watch`` says when its client leaves, ``answer`` writes its answer, and ``done`` (if
    given) is called once it is answered or its client has left. An HTTP worker that has
    checked the whole body's image already gives the outcome as ``checked``, and when it had
    the head as ``started`` (``time.perf_counter``, s). Every entry point answers an
    unforeseen exception 500 ``internal``, as the ASGI route does.
    """

    __slots__ = (
        "answer",
        "checked",
        "chunks",
        "done",
        "exchange",
        "pending",
        "service",
        "size",
        "stage",
        "watch",
    )

    def __init__(
        self,
        service: Service,
        sent: Sent,
        watch: LostConnection,
        answer: Answer,
        done: Callable[[], None] | None = None,
        checked: Checked | None = None,
        started: float | None = None,
    ) -> None:
        self.service = service
        self.exchange = ClassifyExchange(service, sent, started)
        self.watch = watch
        self.answer = answer
        self.done = done
        self.checked = checked
        self.chunks: list[bytes] = []
        self.size = 0  # body bytes so far
        self.pending: Pending | None = None  # the queued request, once submitted
        self.stage = Stage.HEAD

    @property
    def receiving(self) -> bool:
        """Whether it wants the request's body chunks (:meth:`body`, :meth:`complete`)."""
        return self.stage is Stage.BODY

    def begin(self, buffered: bytes, more: bool) -> None:
        """The request's turn: admit it (or refuse it before any body is read), then take
        the ``buffered`` body bytes; ``more``: whether more are to come."""
        try:
            self.exchange.admit()
            if self.watch.lost:  # gone before its turn came
                self._gone()
                return
            self.watch.callback = self._lost
            self.stage = Stage.BODY
            if buffered:
                self._take(buffered)
            if self.stage is Stage.BODY and not more:
                self._submit()
        except ApiError as exc:
            self._refuse(exc)
        except Exception:
            self._unexpected()

    def body(self, chunk: bytes) -> None:
        """A chunk of the body arrived."""
        try:
            self._take(chunk)
        except Exception:
            self._unexpected()

    def complete(self) -> None:
        """The body is whole."""
        try:
            self._submit()
        except Exception:
            self._unexpected()

    def _take(self, chunk: bytes) -> None:
        self.size += len(chunk)
        try:
            self.exchange.check_size(self.size)
        except ApiError as exc:
            self._refuse(exc)
            return
        self.chunks.append(chunk)

    def _submit(self) -> None:
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        try:
            self.pending = self.exchange.submit(body, self.checked)
        except ApiError as exc:
            self._refuse(exc)
            return
        self.stage = Stage.QUEUED
        self.service.watch(self.pending, self._answered)

    def _answered(self, future: asyncio.Future[Completed]) -> None:
        """The scheduler's callback: the answer, a refusal, or cancelled (the client left)."""
        if self.stage is Stage.DONE:
            return
        try:
            if future.cancelled():
                self._gone()
                return
            error = future.exception()
            if isinstance(error, SCHEDULER_REFUSALS):
                self._refuse(refusal(error))
                return
            if error is not None:
                raise error
            try:
                self._succeed(future.result())
            except ApiError as exc:
                self._refuse(exc)
        except Exception:
            self._unexpected()

    def _succeed(self, completed: Completed) -> None:
        """Send the 200 for the scheduler's answer.

        Raises:
            ApiError: the replica refused the image (nothing was sent).
        """
        headers, content = self.exchange.success(completed)
        self._answer(200, headers, content)

    def _lost(self) -> None:
        """The connection's callback: the client left (or was cut off mid-body)."""
        if self.stage is Stage.QUEUED and self.pending is not None:
            # Its future is cancelled: the scheduler's callback then counts it gone.
            self.service.cancel(self.pending)
        elif self.stage is Stage.BODY:
            self._gone()

    def _refuse(self, exc: ApiError) -> None:
        self._answer_response(self.exchange.refused(exc))

    def _unexpected(self) -> None:
        if self.stage is not Stage.DONE:
            self._answer_response(self.exchange.unexpected())

    def _answer_response(self, response: Response) -> None:
        self._answer(response.status_code, response.raw_headers, bytes(response.body))

    def _answer(self, status: int, headers: list[tuple[bytes, bytes]], content: bytes) -> None:
        self._end()
        self.answer(status, headers, content)
        self.exchange.finish(status)

    def _gone(self) -> None:
        """Nothing to send (nobody is listening): counted as the ASGI route counts it."""
        self._end()
        self.exchange.finish(499)

    def _end(self) -> None:
        self.stage = Stage.DONE
        self.chunks = []
        self.watch.callback = None
        if self.done is not None:
            self.done()


class ConnectionClassify(DirectClassify):
    """A :class:`DirectClassify` on gre's own connection: the protocol's
    :class:`gre.http.protocol.DirectHandler`, answering through
    :meth:`LimitedHttpProtocol.answer_directly`."""

    __slots__ = ("cycle",)

    def __init__(
        self, protocol: LimitedHttpProtocol, cycle: RequestResponseCycle, service: Service
    ) -> None:
        watch = cycle.scope["extensions"][LOST_CONNECTION]
        assert isinstance(watch, LostConnection)

        def answer(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
            protocol.answer_directly(cycle, status, headers, body)

        scope = cycle.scope
        super().__init__(service, sent_of(scope["headers"], scope["query_string"]), watch, answer)
        self.cycle: RequestResponseCycle = cycle

    def start(self) -> None:
        """Its turn on the connection: what uvicorn buffered of its body meanwhile (while a
        request before it was answered) comes first."""
        cycle = self.cycle
        buffered = bytes(cycle.body)
        cycle.body.clear()
        self.begin(buffered, cycle.more_body)
