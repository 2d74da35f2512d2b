"""One ``POST /api/classify`` request's work, whatever carries its bytes: the ASGI route
(:class:`gre.http.classify_route.ClassifyRoute`, under Starlette's test client and the HTTP
workers' bridge) and the connection's own answer (:mod:`gre.http.direct_classify`, gre's
server) both drive a :class:`ClassifyExchange` through the same steps, so that a client sees
the same answers, errors, headers, limits, metrics and access-log lines through either:

1. :meth:`ClassifyExchange.admit` once the head is in: ``top_k``, ``X-Request-Timeout-Ms``,
   the scheduler's admission and a declared ``Content-Length`` over ``max_body_bytes``, all
   before any of the body is read;
2. :meth:`ClassifyExchange.check_size` as body bytes arrive (413 as soon as they pass the
   limit);
3. :meth:`ClassifyExchange.submit` once the body is whole (the image check, then the queue);
4. :meth:`ClassifyExchange.success` with the scheduler's answer (the 200's head and JSON), or
   :meth:`ClassifyExchange.refused` / :meth:`ClassifyExchange.unexpected` for an error's;
5. :meth:`ClassifyExchange.finish` with the status sent (the count and the access-log line).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

from starlette.responses import Response

from gre.batching.errors import DeadlineExceeded, QueueFull, ReplicaError, ShuttingDown
from gre.batching.queue import Pending
from gre.batching.scheduler import Admission, Completed
from gre.http.errors import ApiError, ErrorCode, error_response, internal_error
from gre.http.request_parts import (
    access_log,
    account,
    account_completed,
    refusal,
    request_id_of,
    server_timing,
    timeout_of,
    top_k_of,
)
from gre.model.imaging import ImageError, ImageInfo, check_image
from gre.service import Service

#: The request headers an exchange reads (ASGI and uvicorn name them in lower case).
_REQUEST_ID, _TIMEOUT, _LENGTH = b"x-request-id", b"x-request-timeout-ms", b"content-length"
_WANTED = (_REQUEST_ID, _TIMEOUT, _LENGTH)
_JSON = (b"content-type", b"application/json")

#: The scheduler's refusals, answered through :func:`gre.http.request_parts.refusal`.
SCHEDULER_REFUSALS = (QueueFull, ShuttingDown, ReplicaError, DeadlineExceeded)


class Sent(NamedTuple):
    """What a classify exchange reads of its request's head, as sent (header values decoded
    as latin-1, ``None`` when absent): small and plain, so an HTTP worker can send it across
    the bridge instead of the whole scope. A tuple: one is made per request."""

    request_id: str | None
    timeout: str | None
    length: str | None
    query: bytes


def sent_of(headers: Iterable[tuple[bytes, bytes]], query: bytes) -> Sent:
    """:class:`Sent` of a request's ``headers`` (names in lower case, as ASGI's
    ``scope["headers"]``; of a repeated one the first counts, as Starlette's ``Headers.get``)
    and its raw ``query`` string."""
    wanted: dict[bytes, str] = {}
    for name, value in headers:
        if name in _WANTED and name not in wanted:
            wanted[name] = value.decode("latin-1")
    return Sent(wanted.get(_REQUEST_ID), wanted.get(_TIMEOUT), wanted.get(_LENGTH), query)


#: :func:`checked_image`'s outcome: the image's header, or its refusal's code and message.
Checked = ImageInfo | tuple[str, str]


# A Sent and a Checked cross from an HTTP worker to the primary (bridge CLASSIFY, WHOLE) as
# plain tuples. A NamedTuple pickles as a reference to its class, which unpickling looks up by
# module and name and then calls: a CLASSIFY message took 4.2 us to unpickle instead of 0.7
# (of the primary's ~120 us of CPU per request), and 8.7 us to pickle instead of 1.2.


def sent_from(fields: tuple[Any, ...]) -> Sent:
    """The :class:`Sent` whose fields crossed as the plain tuple ``fields``."""
    return Sent._make(fields)


def checked_from(fields: tuple[Any, ...]) -> Checked:
    """The :data:`Checked` that crossed as the plain tuple ``fields``: an
    :class:`ImageInfo`'s three, or a refusal's code and message."""
    if len(fields) == len(ImageInfo._fields):
        return ImageInfo._make(fields)
    code, message = fields
    return (str(code), str(message))


def checked_image(body: bytes, max_pixels: int) -> Checked:
    """:func:`gre.model.imaging.check_image` as a value that can cross a process: an HTTP
    worker checks each whole body itself (its scan of a JPEG's bytes is the costliest step of
    the exchange) and the primary's :meth:`ClassifyExchange.submit` takes the outcome."""
    try:
        return check_image(body, max_pixels)
    except ImageError as exc:
        return (exc.code, str(exc))


def success_headers(timing: str, content: bytes, request_id: str) -> list[tuple[bytes, bytes]]:
    """A 200's headers: ``Server-Timing`` (``timing``,
    :func:`gre.http.request_parts.server_timing`), the JSON body ``content``'s length and
    type, and ``X-Request-Id``; names in lower case, as ASGI's."""
    return [
        (b"server-timing", timing.encode("latin-1")),
        (b"content-length", str(len(content)).encode("latin-1")),
        _JSON,
        (b"x-request-id", request_id.encode("latin-1")),
    ]


class ClassifyExchange:
    """One classify request from its head to its access-log line (see the module docstring).

    Args:
        service: the service that answers it.
        sent: what it reads of the request's head (:func:`sent_of`); of its query string
            ``top_k`` (the last one counts, as Starlette's ``query_params.get``).
    """

    __slots__ = (
        "_admission",
        "_sent",
        "_top_k",
        "record",
        "request_id",
        "service",
        "started",
    )

    def __init__(self, service: Service, sent: Sent, started: float | None = None):
        self.service = service
        #: When the head was complete (``time.perf_counter``, s; given: when the HTTP worker
        #: had it, ``CLOCK_MONOTONIC`` being one clock for all processes): the request's
        #: duration runs from here.
        self.started = time.perf_counter() if started is None else started
        self._sent = sent
        self._admission: Admission | None = None
        self._top_k = 0
        #: The request's id, and its access-log record (the fields logged with its line).
        self.request_id, self.record = request_id_of(sent.request_id)

    def admit(self) -> None:
        """Everything decided before the body is read.

        Raises:
            ApiError: 422 ``bad_top_k``, 400 ``bad_timeout``, 503 ``queue_full`` or
                ``shutting_down``, 413 ``too_large`` for a declared length over the limit.
        """
        self._top_k = top_k_of(self._top_k_sent(), self.service)
        timeout_ms = timeout_of(self._sent.timeout)
        try:
            # Refused after the upload means refused before it: don't take the body for nothing.
            self._admission = self.service.admit(timeout_ms)
        except (QueueFull, ShuttingDown) as exc:
            raise refusal(exc) from None
        declared = self._sent.length
        limit = self.service.config.server.max_body_bytes
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(
                ErrorCode.TOO_LARGE, f"the body is {declared} bytes; the limit is {limit}"
            )

    def check_size(self, size: int) -> None:
        """``size`` body bytes have arrived so far.

        Raises:
            ApiError: 413 ``too_large`` once they exceed ``server.max_body_bytes``.
        """
        limit = self.service.config.server.max_body_bytes
        if size > limit:
            raise ApiError(ErrorCode.TOO_LARGE, f"the body exceeds the limit of {limit} bytes")

    def submit(self, body: bytes, checked: Checked | None = None) -> Pending:
        """Check the whole body's image (unless ``checked``: :func:`checked_image` of it,
        by an HTTP worker) and queue it.

        Raises:
            ApiError: 400/413/415 from the image check (``gre.model.imaging``), 503 when the
                queue filled up or the service began to drain since :meth:`admit`.
        """
        assert self._admission is not None, "submit() before admit()"
        server = self.service.config.server
        self.record["bytes"] = len(body)
        if checked is None:
            checked = checked_image(body, server.max_pixels)
        if not isinstance(checked, ImageInfo):
            code, message = checked
            raise ApiError(ErrorCode(code), message)
        self.record["image"] = f"{checked.width}x{checked.height}"
        try:
            return self.service.submit(self._admission, body, self._top_k)
        except (QueueFull, ShuttingDown) as exc:
            raise refusal(exc) from None

    def success(self, completed: Completed) -> tuple[list[tuple[bytes, bytes]], bytes]:
        """The 200's headers and JSON body for the scheduler's answer: :meth:`account`,
        then :meth:`encoded`.

        Raises:
            ApiError: the replica refused the image (its code and message).
        """
        self.account(completed)
        return self.encoded(completed)

    def account(self, completed: Completed) -> None:
        """Record the scheduler's answer (the access-log fields, the queue-time metric).

        Raises:
            ApiError: the replica refused the image (its code and message).
        """
        account_completed(self.service, self.record, completed)

    def encoded(self, completed: Completed) -> tuple[list[tuple[bytes, bytes]], bytes]:
        """The 200's headers and JSON body for an answer :meth:`account` took.

        Raises:
            ValueError: a confidence is not finite (no JSON for it).
        """
        content = self.service.answer_json(completed)
        return success_headers(server_timing(completed), content, self.request_id), content

    def refused(self, exc: ApiError) -> Response:
        """The answer to a refusal: gre's JSON error, with ``X-Request-Id``; recorded for
        the access log and counted in ``gre_rejected_total`` when it has a reason."""
        self.record.update(error=exc.code.value, reason=exc.message)
        if exc.code.reason is not None:
            self.service.metrics.rejected.labels(exc.code.reason).inc()
        return self._identified(error_response(exc.code, exc.message))

    def unexpected(self) -> Response:
        """The answer to an unforeseen exception (call from its ``except``: it is logged with
        its traceback): 500 ``internal``, naming the request id."""
        access_log.exception("unexpected error", extra={"request_id": self.request_id})
        self.record.update(error=ErrorCode.INTERNAL.value, reason="unexpected error")
        return self._identified(internal_error(self.request_id))

    def finish(self, status: int) -> None:
        """Count and log the request, answered ``status`` (499: its client left)."""
        account(self.service, status, time.perf_counter() - self.started, self.record)

    def _identified(self, response: Response) -> Response:
        response.headers["X-Request-Id"] = self.request_id
        return response

    def _top_k_sent(self) -> str | None:
        raw = None
        if self._sent.query:
            query = self._sent.query.decode("latin-1")
            for name, value in parse_qsl(query, keep_blank_values=True):
                if name == "top_k":
                    raw = value
        return raw
