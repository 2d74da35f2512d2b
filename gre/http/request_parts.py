"""What every API's handler does alike with a request (``/api/classify`` in
``gre.http.app``, ``/v2/.../infer`` in ``gre.http.inference_protocol``): its id and
access-log record, its ``X-Request-Timeout-Ms`` header, its body read under the size limit,
the catalogue's answer when the scheduler refuses it (``gre.http.errors``), and how its
answer is counted and logged."""

from __future__ import annotations

import logging
import re
from typing import Any

from starlette.requests import Request

from gre.batching.errors import DeadlineExceeded, QueueFull, ReplicaError, ShuttingDown
from gre.http.errors import ApiError, ErrorCode, new_request_id
from gre.service import Service

access_log = logging.getLogger("gre.access")

#: A client's X-Request-Id kept as sent: 1-128 visible ASCII characters, as proxies accept.
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
_MILLISECONDS = re.compile(r"[0-9]{1,9}(\.[0-9]{1,6})?")


def request_id_of(sent: str | None) -> tuple[str, dict[str, Any]]:
    """The request's id and its access-log record: the client's ``X-Request-Id`` when it is
    1-128 visible ASCII characters, else a new one (logged beside the refused id's length,
    never the id itself, so a client cannot multiply the log's size per request)."""
    if sent is not None and _REQUEST_ID.fullmatch(sent):
        return sent, {"request_id": sent}
    request_id = new_request_id()
    record: dict[str, Any] = {"request_id": request_id}
    if sent is not None:
        record["refused_request_id_length"] = len(sent)
    return request_id, record


def parse_timeout(request: Request) -> float | None:
    """The ``X-Request-Timeout-Ms`` header (ms, > 0), which may only lower the deadline.

    Raises:
        ApiError: 400 when it is not a positive number.
    """
    raw = request.headers.get("x-request-timeout-ms")
    if raw is None:
        return None
    # float() alone would also take "1_000", "inf", "nan" and "1e999".
    timeout = float(raw) if _MILLISECONDS.fullmatch(raw) else 0.0
    if not timeout > 0 or timeout == float("inf"):
        raise ApiError(
            ErrorCode.BAD_TIMEOUT, f"X-Request-Timeout-Ms must be a positive number, got {raw!r}"
        )
    return timeout


async def read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing (413) as soon as it exceeds ``limit`` bytes, before the rest
    is read; a ``Content-Length`` over the limit is refused without reading anything."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(ErrorCode.TOO_LARGE, f"the body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(ErrorCode.TOO_LARGE, f"the body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def refusal(exc: QueueFull | ShuttingDown | ReplicaError | DeadlineExceeded) -> ApiError:
    """The answer to a request the scheduler refused or could not answer: 503 (with
    ``Retry-After``) for a full queue, a drain or a failed replica; 504 past the deadline."""
    if isinstance(exc, QueueFull):
        return ApiError(ErrorCode.QUEUE_FULL, str(exc))
    if isinstance(exc, ShuttingDown):
        return ApiError(ErrorCode.SHUTTING_DOWN, str(exc))
    if isinstance(exc, ReplicaError):
        return ApiError(ErrorCode.REPLICA_FAILED, str(exc))
    return ApiError(ErrorCode.DEADLINE_EXCEEDED, str(exc))


def account(service: Service, status: int, elapsed_s: float, record: dict[str, Any]) -> None:
    """Count and log one answered request: ``gre_requests_total{code}``, its duration (s)
    and one access-log line with ``record`` (a warning from 400 up; successes only while
    ``server.access_log``). 499 (the client left, nothing was sent) is logged, not counted."""
    record.update(status=status, duration_ms=round(elapsed_s * 1e3, 3))
    if status == 499:
        access_log.info("client disconnected", extra=record)
        return
    service.metrics.requests.labels(str(status)).inc()
    service.metrics.request_duration.observe(elapsed_s)
    if status >= 400:
        access_log.warning("request failed", extra=record)
    elif service.config.server.access_log:
        access_log.info("request", extra=record)
