"""The error catalogue: every error code gre answers, with its HTTP status, whether it carries
``Retry-After``, its ``gre_rejected_total`` reason and what it means; and the one JSON error
encoder.

Every error answer is JSON ``{"error": "<code>", "message": "<what was wrong>"}``. The app,
the connection protocol (``gre.http.protocol``), the metrics' ``reason`` label and the OpenAPI
document (``gre.http.openapi``) all read this table; ``tests/http/test_errors.py`` keeps
README's errors table in step with it.
"""

from __future__ import annotations

import enum
import json
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

log = logging.getLogger("gre.http")

#: Seconds a client should wait before retrying an answer that carries ``Retry-After``.
RETRY_AFTER_S = 1


class ErrorCode(enum.StrEnum):
    """Every error code gre answers; :data:`CATALOGUE` holds each one's facts."""

    BAD_IMAGE = "bad_image"
    BAD_TIMEOUT = "bad_timeout"
    BAD_REQUEST = "bad_request"
    REQUEST_TIMEOUT = "request_timeout"
    HEADERS_TOO_LARGE = "headers_too_large"
    TOO_LARGE = "too_large"
    UNSUPPORTED_FORMAT = "unsupported_format"
    BAD_TOP_K = "bad_top_k"
    BAD_BLOB = "bad_blob"
    QUEUE_FULL = "queue_full"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    TOO_MANY_BYTES = "too_many_bytes"
    SHUTTING_DOWN = "shutting_down"
    REPLICA_FAILED = "replica_failed"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    FORBIDDEN = "forbidden"
    RELOAD_IN_PROGRESS = "reload_in_progress"
    RELOAD_FAILED = "reload_failed"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    INTERNAL = "internal"

    @property
    def facts(self) -> ErrorFacts:
        """This code's row of :data:`CATALOGUE`."""
        return CATALOGUE[self]

    @property
    def status(self) -> int:
        """Its HTTP status."""
        return CATALOGUE[self].status

    @property
    def reason(self) -> str | None:
        """Its ``gre_rejected_total{reason}`` label; ``None``: not counted."""
        facts = CATALOGUE[self]
        return self.value if facts.reason == "" else facts.reason

    @property
    def headers(self) -> dict[str, str]:
        """The headers its answer carries besides ``X-Request-Id``."""
        facts = CATALOGUE[self]
        headers = {"Retry-After": str(RETRY_AFTER_S)} if facts.retry_after else {}
        if facts.closes:
            headers["Connection"] = "close"
        return headers


@dataclass(frozen=True)
class ErrorFacts:
    """One row of the catalogue: ``status`` (HTTP), ``description`` (README's "when"),
    ``retry_after`` (the answer carries ``Retry-After``), ``closes`` (the connection is
    closed after it), ``reason`` (its ``gre_rejected_total`` label: ``""`` for the code
    itself, ``None`` for not counted)."""

    status: int
    description: str
    retry_after: bool = False
    closes: bool = False
    reason: str | None = ""


E = ErrorCode

#: The error catalogue: every :class:`ErrorCode`'s facts.
CATALOGUE: dict[ErrorCode, ErrorFacts] = {
    E.BAD_IMAGE: ErrorFacts(
        400,
        "empty body, not an image (a multipart form or base64 gets a hint to send the raw "
        "bytes), or undecodable (corrupt, truncated, a bogus Huffman table, PNG data that "
        "inflates past its image: a zlib bomb)",
    ),
    E.BAD_TIMEOUT: ErrorFacts(400, "`X-Request-Timeout-Ms` is not a positive number"),
    E.BAD_REQUEST: ErrorFacts(
        400, "not parseable as HTTP/1.1; the connection is closed", closes=True
    ),
    E.REQUEST_TIMEOUT: ErrorFacts(
        408,
        "the request head or body did not arrive in time (`header_timeout_s`, "
        "`body_timeout_s`); the connection is closed",
        closes=True,
    ),
    E.HEADERS_TOO_LARGE: ErrorFacts(
        431,
        "request line + headers over `max_header_bytes`; the connection is closed",
        closes=True,
    ),
    E.TOO_LARGE: ErrorFacts(
        413,
        "body over `max_body_bytes` (refused from `Content-Length`, or while streaming, "
        "before the rest is read), or an image header declaring more than `max_pixels` or a "
        "side over 1,000,000 px (decompression bombs in any decoded format are refused before "
        "decoding), or a JPEG of more than 100 scans (a CPU bomb: each scan is a pass over "
        "the image)",
    ),
    E.UNSUPPORTED_FORMAT: ErrorFacts(
        415,
        "a recognised format gre does not decode (GIF, TIFF, SVG, PDF, HEIF/AVIF, JPEG 2000, "
        "…; 12- and 16-bit or hierarchical JPEG)",
    ),
    E.BAD_TOP_K: ErrorFacts(422, "`top_k` not an integer in 1..classes"),
    E.BAD_BLOB: ErrorFacts(
        422,
        "`/api/features` with no `blob`, or one the net does not have (the message lists "
        "the net's blobs; `GET /api/model` too)",
    ),
    E.QUEUE_FULL: ErrorFacts(
        503,
        "`max_queue_size` requests already waiting, or requests waiting and the expected "
        "time to answer this one beyond its deadline; before the body is read",
        retry_after=True,
    ),
    E.TOO_MANY_CONNECTIONS: ErrorFacts(
        503,
        "`max_connections` open, each with a request in progress",
        retry_after=True,
        closes=True,
    ),
    E.TOO_MANY_BYTES: ErrorFacts(
        503,
        "the body does not fit in `max_inflight_body_bytes` with the bodies already held "
        "(its `Content-Length` before anything is read, or the chunk that would cross it); "
        "the connection is closed",
        retry_after=True,
        closes=True,
    ),
    E.SHUTTING_DOWN: ErrorFacts(503, "the service is draining", retry_after=True),
    E.REPLICA_FAILED: ErrorFacts(
        503, "the replica running the request's batch failed", retry_after=True
    ),
    E.DEADLINE_EXCEEDED: ErrorFacts(
        504,
        "the deadline (`timeout_ms`, or the header's lower value) passed; a request still "
        "queued then is never run",
        reason="deadline",
    ),
    E.FORBIDDEN: ErrorFacts(403, "`/admin/*` from a client not in `admin_clients`", reason=None),
    E.RELOAD_IN_PROGRESS: ErrorFacts(
        409, "`/admin/reload` while a reload is already under way", reason=None
    ),
    E.RELOAD_FAILED: ErrorFacts(
        422,
        "`/admin/reload`: the new config or model could not be loaded; the old model "
        "keeps serving and the message says why",
        reason=None,
    ),
    E.NOT_FOUND: ErrorFacts(404, "unknown path", reason=None),
    E.METHOD_NOT_ALLOWED: ErrorFacts(405, "wrong method", reason=None),
    E.INTERNAL: ErrorFacts(
        500,
        "a bug in gre: the message names the request id; the log has the exception",
        reason=None,
    ),
}


class ApiError(Exception):
    """An error answer: a catalogue ``code`` and a ``message`` saying what was wrong."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def error_body(code: ErrorCode, message: str) -> bytes:
    """The JSON error body, UTF-8: ``{"error": code, "message": message}``."""
    return json.dumps({"error": code.value, "message": message}, separators=(",", ":")).encode()


def error_response(
    code: ErrorCode, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    """The answer for ``code``: its status, its catalogue headers, then ``headers``."""
    return Response(
        error_body(code, message),
        code.status,
        headers={**code.headers, **(headers or {})},
        media_type="application/json",
    )


async def handle_api_error(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for :class:`ApiError` (routes other than classify)."""
    assert isinstance(exc, ApiError)
    return error_response(exc.code, exc.message)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (404 unknown path, 405 wrong method) in gre's JSON shape."""
    assert isinstance(exc, HTTPException)
    path = request.url.path
    if exc.status_code == 405:
        code, message = ErrorCode.METHOD_NOT_ALLOWED, f"{request.method} is not allowed on {path}"
    else:
        code, message = ErrorCode.NOT_FOUND, f"no endpoint at {path}"
    return error_response(code, message, exc.headers)


def internal_error(request_id: str) -> Response:
    """500 ``internal``: a generic message naming ``request_id``; the caller logs the
    exception (its type and text never reach the client)."""
    message = f"internal error; the log has its details under request id {request_id}"
    return error_response(ErrorCode.INTERNAL, message, {"X-Request-Id": request_id})


def new_request_id() -> str:
    """A fresh request id: 32 random hex digits (128 bits, as a UUID4's but for its version
    bits). From the process's Mersenne Twister, not the OS (uuid4 and os.urandom make a
    getrandom syscall per id, and every request without an id gets one): an id names a
    request in the logs, it guards nothing. Each gre process is spawned, not forked, so each
    has its own seed."""
    return f"{random.getrandbits(128):032x}"


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    """Anything unforeseen: 500 ``internal`` (see :func:`internal_error`), logged."""
    request_id = new_request_id()
    log.error(
        "unexpected error on %s %s",
        request.method,
        request.url.path,
        exc_info=exc,
        extra={"request_id": request_id},
    )
    return internal_error(request_id)
