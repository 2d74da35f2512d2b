"""``POST /api/classify`` as a plain ASGI application: the hot path, without Starlette's
per-request machinery.

Starlette stays the application (every other route, the error handlers, the lifespan), but
its two middleware layers, its router and a ``Request`` and ``JSONResponse`` per request cost
more than the rest of the front end's work for a small image (py-spy under ``wrk -c64``:
half of the front end's time). :class:`GreApp` hands the classify POSTs straight to
:class:`ClassifyRoute`, which reads the three headers and one query parameter it needs off
the ASGI scope, waits for its answer with one timer and no watcher task
(:class:`gre.http.protocol.LostConnection` says when the client leaves), and writes the
answer's JSON and headers itself. What a client sees is the same as through Starlette: the
same answers, errors (``gre.http.errors``), headers, limits, metrics and access-log lines,
which ``tests/http`` checks through both.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from gre.batching.errors import DeadlineExceeded, QueueFull, ReplicaError, ShuttingDown
from gre.http.errors import ApiError, ErrorCode, error_response, internal_error
from gre.http.request_parts import (
    ClientGone,
    access_log,
    account,
    account_completed,
    refusal,
    request_id_of,
    server_timing,
    timeout_of,
    top_k_of,
    wait_for_answer,
)
from gre.model.imaging import ImageError, check_image
from gre.service import Service

#: Starlette's JSONResponse encoding (compact, UTF-8, NaN refused), made once.
_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode

#: The request headers the route reads (ASGI names them in lower case).
_REQUEST_ID, _TIMEOUT, _LENGTH = b"x-request-id", b"x-request-timeout-ms", b"content-length"
_WANTED = (_REQUEST_ID, _TIMEOUT, _LENGTH)


class ClientDisconnected(Exception):
    """The client went away while its body was being read."""


class ClassifyRoute:
    """The ASGI application of ``POST /api/classify`` for ``service``: the body is one encoded
    image, the answer its top-k classes (README "API"). Also Starlette's endpoint for the
    route, so the router's answers for other methods (405) stay Starlette's."""

    def __init__(self, service: Service) -> None:
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = self.service
        start = time.perf_counter()
        headers: dict[bytes, str] = {}
        for name, value in scope["headers"]:
            if name in _WANTED and name not in headers:  # the first, as Starlette's .get
                headers[name] = value.decode("latin-1")
        request_id, record = request_id_of(headers.get(_REQUEST_ID))
        try:
            status = await self._serve(scope, receive, send, headers, record, request_id)
        except ApiError as exc:
            record.update(error=exc.code.value, reason=exc.message)
            if exc.code.reason is not None:
                service.metrics.rejected.labels(exc.code.reason).inc()
            status = await _send_error(error_response(exc.code, exc.message), request_id, send)
        except (ClientDisconnected, ClientGone):
            # Never sent (uvicorn drops it: nobody is listening), but the ASGI cycle ends.
            status = await _send_error(Response(status_code=499), request_id, send)
        except Exception:
            access_log.exception("unexpected error", extra={"request_id": request_id})
            record.update(error=ErrorCode.INTERNAL.value, reason="unexpected error")
            status = await _send_error(internal_error(request_id), request_id, send)
        account(service, status, time.perf_counter() - start, record)

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[bytes, str],
        record: dict[str, Any],
        request_id: str,
    ) -> int:
        """Serve the request; returns the status sent.

        Raises:
            ApiError: the request is refused (answered by the caller).
            ClientDisconnected, ClientGone: the client left mid-body or while it waited.
        """
        service = self.service
        server = service.config.server
        top_k = _top_k(scope, service)
        timeout_ms = timeout_of(headers.get(_TIMEOUT))
        try:
            # Refused after the upload means refused before it: don't take the body for nothing.
            admission = service.admit(timeout_ms)
        except (QueueFull, ShuttingDown) as exc:
            raise refusal(exc) from None
        body = await _read_body(receive, headers.get(_LENGTH), server.max_body_bytes)
        record["bytes"] = len(body)
        try:
            info = check_image(body, server.max_pixels)
            record["image"] = f"{info.width}x{info.height}"
        except ImageError as exc:
            raise ApiError(ErrorCode(exc.code), str(exc)) from None
        try:
            pending = service.submit(admission, body, top_k)
            completed = await wait_for_answer(scope, receive, service, pending)
        except (QueueFull, ShuttingDown, ReplicaError, DeadlineExceeded) as exc:
            raise refusal(exc) from None
        account_completed(service, record, completed)
        content = _encode(service.answer(completed)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"server-timing", server_timing(completed).encode("latin-1")),
                    (b"content-length", str(len(content)).encode("latin-1")),
                    (b"content-type", b"application/json"),
                    (b"x-request-id", request_id.encode("latin-1")),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})
        return 200


def _top_k(scope: Scope, service: Service) -> int:
    """The ``top_k`` query parameter (the last one, as Starlette's ``query_params.get``)."""
    raw = None
    query: bytes = scope.get("query_string", b"")
    if query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if name == "top_k":
                raw = value
    return top_k_of(raw, service)


async def _read_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The whole body, as :func:`gre.http.request_parts.read_body` reads it: 413 for a
    ``Content-Length`` over ``limit`` bytes before reading any of it, or as soon as the bytes
    read pass it.

    Raises:
        ApiError: 413 ``too_large``.
        ClientDisconnected: the client left (or was cut off) mid-body.
    """
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(ErrorCode.TOO_LARGE, f"the body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(ErrorCode.TOO_LARGE, f"the body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _send_error(response: Response, request_id: str, send: Send) -> int:
    """Send a Starlette ``Response`` (an error) with ``X-Request-Id``; returns its status."""
    response.headers["X-Request-Id"] = request_id
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
