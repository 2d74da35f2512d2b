"""``POST /api/classify`` as a plain ASGI application, without Starlette's per-request
machinery: the route for every carrier but gre's own connections (Starlette's test client,
the HTTP workers' bridge, a request with ``Expect: 100-continue``), which answer classify
themselves (:mod:`gre.http.direct_classify`).

Starlette stays the application (every other route, the error handlers, the lifespan), but
its two middleware layers, its router and a ``Request`` and ``JSONResponse`` per request cost
more than the rest of the front end's work for a small image (py-spy under ``wrk -c64``:
half of the front end's time). :class:`GreApp` hands the classify POSTs straight to
:class:`ClassifyRoute`, which drives a :class:`gre.http.classify_exchange.ClassifyExchange`
(the same steps as the direct answer), waits for its answer with one timer and no watcher
task (:class:`gre.http.protocol.LostConnection` says when the client leaves), and sends the
answer's JSON and headers itself. What a client sees is the same as through Starlette: the
same answers, errors (``gre.http.errors``), headers, limits, metrics and access-log lines,
which ``tests/http`` checks through both.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from gre.http.classify_exchange import SCHEDULER_REFUSALS, ClassifyExchange, sent_of
from gre.http.errors import ApiError
from gre.http.request_parts import ClientGone, refusal, wait_for_answer
from gre.service import Service


class ClientDisconnected(Exception):
    """The client went away while its body was being read."""


class ClassifyRoute:
    """The ASGI application of ``POST /api/classify`` for ``service``: the body is one encoded
    image, the answer its top-k classes (README "API"). Also Starlette's endpoint for the
    route, so the router's answers for other methods (405) stay Starlette's."""

    def __init__(self, service: Service) -> None:
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sent = sent_of(scope["headers"], scope.get("query_string", b""))
        exchange = ClassifyExchange(self.service, sent)
        try:
            status = await self._serve(exchange, scope, receive, send)
        except ApiError as exc:
            status = await _send(exchange.refused(exc), send)
        except (ClientDisconnected, ClientGone):
            # Never sent (uvicorn drops it: nobody is listening), but the ASGI cycle ends.
            status = await _send(Response(status_code=499), send)
        except Exception:
            status = await _send(exchange.unexpected(), send)
        exchange.finish(status)

    async def _serve(
        self, exchange: ClassifyExchange, scope: Scope, receive: Receive, send: Send
    ) -> int:
        """Serve the request; returns the status sent.

        Raises:
            ApiError: the request is refused (answered by the caller).
            ClientDisconnected, ClientGone: the client left mid-body or while it waited.
        """
        exchange.admit()
        body = await _read_body(receive, exchange)
        try:
            pending = exchange.submit(body)
            completed = await wait_for_answer(scope, receive, self.service, pending)
        except SCHEDULER_REFUSALS as exc:
            raise refusal(exc) from None
        headers, content = exchange.success(completed)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})
        return 200


async def _read_body(receive: Receive, exchange: ClassifyExchange) -> bytes:
    """The whole body, refused (413) as soon as the bytes read pass the limit.

    Raises:
        ApiError: 413 ``too_large``.
        ClientDisconnected: the client left (or was cut off) mid-body.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        exchange.check_size(size)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _send(response: Response, send: Send) -> int:
    """Send a Starlette ``Response`` (an error); returns its status."""
    await response({"type": "http"}, _no_receive, send)
    return response.status_code


async def _no_receive() -> Message:  # a Response never reads the request
    return {"type": "http.disconnect"}


class GreApp(Starlette):
    """Starlette, with ``POST /api/classify`` handed straight to its :class:`ClassifyRoute`
    (set :attr:`classify_route`): the same route the router has, without the middleware
    stack and the router in front of it."""

    classify_route: ClassifyRoute | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.classify_route
        if (
            route is not None
            and scope["type"] == "http"
            and scope["path"] == "/api/classify"
            and scope["method"] == "POST"
        ):
            await route(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
