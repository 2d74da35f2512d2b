"""What every API's handler does alike with a request (``/api/classify`` in
``gre.http.app``, ``/v2/.../infer`` in ``gre.http.inference_protocol``): its id and
access-log record, its ``X-Request-Timeout-Ms`` header, its body read under the size limit,
the catalogue's answer when the scheduler refuses it (``gre.http.errors``), and how its
answer is counted and logged."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from starlette.requests import Request
from starlette.types import Receive, Scope

from gre.batching.errors import DeadlineExceeded, QueueFull, ReplicaError, ShuttingDown
from gre.batching.queue import Pending
from gre.batching.scheduler import Completed
from gre.http.errors import ApiError, ErrorCode, new_request_id
from gre.http.protocol import LOST_CONNECTION, LostConnection
from gre.messages import ItemError
from gre.service import Service

access_log = logging.getLogger("gre.access")

#: A client's X-Request-Id kept as sent: 1-128 visible ASCII characters, as proxies accept.
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
_MILLISECONDS = re.compile(r"[0-9]{1,9}(\.[0-9]{1,6})?")
_DECIMAL = re.compile(r"[0-9]{1,9}")


class ClientGone(Exception):
    """The client disconnected while its request waited."""


def top_k_of(raw: str | None, service: Service) -> int:
    """The ``top_k`` query parameter's value as sent (``None``: absent) -> 1..classes
    (default ``server.default_top_k``).

    Raises:
        ApiError: 422 ``bad_top_k`` when it is not an integer in range.
    """
    classes = service.num_classes
    if raw is None:
        default = service.config.server.default_top_k
        return min(default, classes) if classes else default
    # int() alone would also take "+2", " 2", "1_0" and non-ASCII digits.
    if not _DECIMAL.fullmatch(raw):
        raise ApiError(ErrorCode.BAD_TOP_K, f"top_k must be an integer, got {raw!r}")
    top_k = int(raw)
    if top_k < 1 or (classes is not None and top_k > classes):
        limit = f"1..{classes}" if classes else ">= 1"
        raise ApiError(ErrorCode.BAD_TOP_K, f"top_k must be in {limit}, got {top_k}")
    return top_k


async def wait_for_answer(
    scope: Scope, receive: Receive, service: Service, pending: Pending
) -> Completed:
    """Wait for the request's answer, dropping it from the queue if the client disconnects.

    On gre's own connections (:class:`gre.http.protocol.LostConnection` in the scope) the
    protocol says when the client leaves; elsewhere (a test client) a ``receive()`` waits
    for ``http.disconnect`` beside the answer.

    Raises:
        ClientGone: the client disconnected first.
        DeadlineExceeded, ReplicaError, ShuttingDown: from the scheduler.
    """
    watch = scope.get("extensions", {}).get(LOST_CONNECTION)
    if not isinstance(watch, LostConnection):
        return await _wait_watching_receive(receive, service, pending)
    if watch.lost:
        service.cancel(pending)
        raise ClientGone
    watch.callback = lambda: service.cancel(pending)
    try:
        return await service.result(pending)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if watch.lost and (task is None or not task.cancelling()):
            raise ClientGone from None  # cancelled by the callback, not this task
        raise
    finally:
        watch.callback = None


async def _wait_watching_receive(receive: Receive, service: Service, pending: Pending) -> Completed:
    answer = asyncio.ensure_future(service.result(pending))
    disconnect = asyncio.ensure_future(receive())
    try:
        while True:
            await asyncio.wait({answer, disconnect}, return_when=asyncio.FIRST_COMPLETED)
            if answer.done():
                return answer.result()
            if disconnect.result()["type"] == "http.disconnect":
                service.cancel(pending)
                raise ClientGone
            disconnect = asyncio.ensure_future(receive())
    finally:
        disconnect.cancel()
        if not answer.done():
            answer.cancel()


def account_completed(service: Service, record: dict[str, Any], completed: Completed) -> None:
    """What an image request's answer adds to its access-log ``record`` and the queue-time
    metric, once the scheduler has answered it.

    Raises:
        ApiError: the replica refused the image (its :class:`ItemError`'s code and message).
    """
    record.update(
        batch_size=completed.batch_size,
        replica=completed.replica,
        queue_ms=completed.queue_ms,
        preprocess_ms=completed.preprocess_ms,
        inference_ms=completed.inference_ms,
    )
    service.metrics.queue_duration.observe(completed.queue_ms / 1e3)
    if isinstance(completed.outcome, ItemError):
        error = completed.outcome
        raise ApiError(ErrorCode(error.code), error.message)


def server_timing(completed: Completed) -> str:
    """The ``Server-Timing`` header: queue, preprocess and inference durations in ms."""
    return timing_header(completed.queue_ms, completed.preprocess_ms, completed.inference_ms)


def timing_header(queue_ms: float, preprocess_ms: float, inference_ms: float) -> str:
    """:func:`server_timing` of the three durations, ms."""
    return (
        f"queue;dur={queue_ms:.3f}, preprocess;dur={preprocess_ms:.3f}, "
        f"inference;dur={inference_ms:.3f}"
    )


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
    return timeout_of(request.headers.get("x-request-timeout-ms"))


def timeout_of(raw: str | None) -> float | None:
    """:func:`parse_timeout` of the header's value as sent (``None``: absent), ms."""
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
    record.update(status=status, duration_ms=elapsed_s * 1e3)
    if status == 499:
        access_log.info("client disconnected", extra=rounded(record))
        return
    service.metrics.answered(status)
    service.metrics.request_duration.observe(elapsed_s)
    if status >= 400:
        access_log.warning("request failed", extra=rounded(record))
    elif service.config.server.access_log:
        access_log.info("request", extra=rounded(record))


#: The access-log record's durations (ms), logged to the µs.
MS_FIELDS = ("queue_ms", "preprocess_ms", "inference_ms", "duration_ms")


def rounded(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with its :data:`MS_FIELDS` rounded to 3 decimals, in place, as it is
    logged: rounding a float costs a string conversion (``round`` goes through dtoa, ~1 µs
    each), so a request whose line is not logged (access log off) does not pay it."""
    for name in MS_FIELDS:
        value = record.get(name)
        if value is not None:
            record[name] = round(value, 3)
    return record
