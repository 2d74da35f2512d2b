"""The HTTP API (Starlette): ``/api/classify``, ``/api/features``, ``/api/model``,
``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json``, and ``/admin/reload`` when
enabled."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gre.batching.errors import DeadlineExceeded, QueueFull, ReplicaError, ShuttingDown
from gre.batching.scheduler import Completed
from gre.http.admin import admin_reload
from gre.http.classify_route import ClassifyRoute, GreApp
from gre.http.errors import (
    ApiError,
    ErrorCode,
    error_response,
    handle_api_error,
    handle_http_exception,
    handle_unexpected,
    internal_error,
)
from gre.http.inference_protocol import inference_protocol_routes
from gre.http.openapi import openapi_document
from gre.http.request_parts import (
    ClientGone,
    access_log,
    account,
    account_completed,
    parse_timeout,
    read_body,
    refusal,
    request_id_of,
    server_timing,
    top_k_of,
    wait_for_answer,
)
from gre.http.ui import ui_routes
from gre.model.imaging import ImageError, check_image
from gre.service import Service


def parse_top_k(request: Request, service: Service) -> int:
    """The ``top_k`` query parameter, 1..classes (default ``server.default_top_k``).

    Raises:
        ApiError: 422 when it is not an integer in range.
    """
    return top_k_of(request.query_params.get("top_k"), service)


def parse_blobs(request: Request, service: Service) -> tuple[str, ...]:
    """The ``blob`` query parameters (repeated: ``?blob=fc7&blob=pool5``), in order, each once.

    Raises:
        ApiError: 422 ``bad_blob`` when none is given or one is not a blob of the net (the
            message lists the net's blobs).
    """
    names = tuple(dict.fromkeys(request.query_params.getlist("blob")))
    known = service.blob_names
    unknown = [name for name in names if name not in known]
    if names and not unknown:
        return names
    what = (
        f"not a blob of this net: {', '.join(map(repr, unknown))}"
        if names
        else ("name at least one blob: ?blob=NAME (repeatable)")
    )
    raise ApiError(ErrorCode.BAD_BLOB, f"{what}; its blobs: {', '.join(known)}")


#: What an image endpoint asks of a request: ``(top_k, blobs)``.
Ask = Callable[[Request, Service], tuple[int, tuple[str, ...]]]
#: What an image endpoint answers for a completed request (JSON-encodable).
Reply = Callable[[Service, Completed], Any]


async def features(request: Request) -> Response:
    """``POST /api/features?blob=fc7&blob=pool5``: the body is one encoded image, as for
    classify; answers ``{blob: [floats]}``, each blob flattened in C, H, W order as pycaffe's
    ``net.blobs[blob].data[0]`` for the same input blob. Batched with classify's requests;
    answered, counted and logged as classify is."""

    def reply(service: Service, completed: Completed) -> Any:
        answer = service.features(completed)
        for name in answer:
            service.metrics.features_blobs.labels(name).inc()
        return answer

    return await serve_image(request, lambda r, s: (0, parse_blobs(r, s)), reply)


async def serve_image(request: Request, ask: Ask, reply: Reply) -> Response:
    """One image request, whatever it asks: ``ask`` reads what it wants from the query,
    ``reply`` makes its answer; ids, refusals, metrics and the access log as classify's."""
    service: Service = request.app.state.service
    start = time.perf_counter()
    request_id, record = request_id_of(request.headers.get("x-request-id"))
    try:
        response = await _serve_image(request, service, record, ask, reply)
    except ApiError as exc:
        record.update(error=exc.code.value, reason=exc.message)
        if exc.code.reason is not None:
            service.metrics.rejected.labels(exc.code.reason).inc()
        response = error_response(exc.code, exc.message)
    except Exception:
        access_log.exception("unexpected error", extra={"request_id": request_id})
        record.update(error=ErrorCode.INTERNAL.value, reason="unexpected error")
        response = internal_error(request_id)
    response.headers["X-Request-Id"] = request_id
    account(service, response.status_code, time.perf_counter() - start, record)
    return response


async def _serve_image(
    request: Request, service: Service, record: dict[str, Any], ask: Ask, reply: Reply
) -> Response:
    server = service.config.server
    top_k, blobs = ask(request, service)
    timeout_ms = parse_timeout(request)
    try:
        # Refused after the upload means refused before it: don't take the body for nothing.
        admission = service.admit(timeout_ms)
    except (QueueFull, ShuttingDown) as exc:
        raise refusal(exc) from None
    try:
        body = await read_body(request, server.max_body_bytes)
    except ClientDisconnect:  # gone mid-body, or cut off by server.body_timeout_s
        return Response(status_code=499)  # never sent: nobody is listening
    record["bytes"] = len(body)
    try:
        info = check_image(body, server.max_pixels)
        record["image"] = f"{info.width}x{info.height}"
    except ImageError as exc:
        raise ApiError(ErrorCode(exc.code), str(exc)) from None
    try:
        pending = service.submit(admission, body, top_k, blobs)
        completed = await wait_for_answer(request.scope, request.receive, service, pending)
    except (QueueFull, ShuttingDown, ReplicaError, DeadlineExceeded) as exc:
        raise refusal(exc) from None
    except ClientGone:
        return Response(status_code=499)  # never sent: nobody is listening
    account_completed(service, record, completed)
    return JSONResponse(
        reply(service, completed), headers={"Server-Timing": server_timing(completed)}
    )


async def model(request: Request) -> Response:
    """``GET /api/model``: model, engine, input shape, classes, devices, batching, batches."""
    service: Service = request.app.state.service
    return JSONResponse(service.describe())


async def metrics(request: Request) -> Response:
    """``GET /metrics``: Prometheus text exposition."""
    service: Service = request.app.state.service
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def healthz(request: Request) -> Response:
    """``GET /healthz``: the process is alive and its event loop answers."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """``GET /readyz``: 200 once every replica has loaded its net and run a warm-up batch,
    then while at least one replica is up; 503 otherwise and while draining."""
    service: Service = request.app.state.service
    readiness = service.readiness()
    body = {
        "ready": readiness.ready,
        "draining": readiness.draining,
        "replicas": {"ready": readiness.replicas_ready, "total": readiness.replicas_total},
    }
    return JSONResponse(body, 200 if readiness.ready else 503)


async def openapi(request: Request) -> Response:
    """``GET /openapi.json``: the OpenAPI 3.1 description of this API (gre/openapi.py)."""
    service: Service = request.app.state.service
    return JSONResponse(openapi_document(service.num_classes, service.blob_names))


def create_app(service: Service, start_replicas: bool = True) -> GreApp:
    """The Starlette application for ``service``.

    With ``start_replicas``, the lifespan starts the replicas in the background (so
    ``/healthz`` and ``/readyz`` answer while nets load) and stops them on shutdown; a
    replica that fails to start is recorded in ``app.state.startup_error``.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.startup_error = None
        task = asyncio.create_task(service.start()) if start_replicas else None
        try:
            yield
        finally:
            if task is not None and not task.done():
                task.cancel()
            await service.stop()

    admin = (
        [Route("/admin/reload", admin_reload, methods=["POST"])]
        if service.config.server.admin_reload
        else []
    )
    classify = ClassifyRoute(service)
    app = GreApp(
        routes=[
            *ui_routes(service),
            *inference_protocol_routes(service),
            *admin,
            Route("/api/classify", classify, methods=["POST"]),  # GreApp's shortcut too
            Route("/api/features", features, methods=["POST"]),
            Route("/api/model", model, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
        ],
        exception_handlers={
            ApiError: handle_api_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
        lifespan=lifespan,
    )
    app.state.service = service
    app.classify_route = classify
    return app
