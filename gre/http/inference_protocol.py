"""The Open Inference Protocol (KServe v2) over HTTP: the ``/v2`` routes, as Triton, KServe,
Seldon MLServer and TorchServe speak it, so that their clients (``tritonclient[http]``) can
use gre: health, server and model metadata, the model's configuration, and inference.

Sources: the protocol (kserve/open-inference-protocol, specification/protocol/
inference_rest.md: health, metadata, inference, and the error object ``{"error": "..."}``);
Triton's extensions (triton-inference-server/server, docs/protocol/):
``binary_tensor_data`` (extension_binary_data.md), ``classification``
(extension_classification.md) and ``model_configuration`` (extension_model_configuration.md:
the model's ModelConfig as JSON). The inference request is parsed in
:mod:`gre.http.inference_request`, the response built in :mod:`gre.http.inference_response`,
the binary tensor data framed by :mod:`gre.http.binary_tensor`.

gre serves one model, named ``model.name`` (the current one: a reload may change it). Its
one input, ``image``, is BYTES ``[N, 1]``: ``N`` encoded images; its one output,
``probabilities``, is FP32 ``[N, classes]`` (BYTES ``[N, k]`` with the classification
extension).

Each image goes through the batcher as one ``/api/classify`` request would: the same body
limit (``max_body_bytes``, for the whole body), the same image checks, its own admission,
and the deadline (``timeout_ms``, lowered by ``X-Request-Timeout-Ms`` or the request's
``timeout`` parameter, µs). The images are queued together, so they can share a batch; at
most ``max_batch_size`` per request (Triton's rule for a model's ``max_batch_size``). If one
fails, the request fails: the protocol's error object, with the catalogue's status for the
cause (``gre.http.errors``), the message naming the image by its index in the request.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

import gre
from gre.batching.errors import DeadlineExceeded, QueueFull, ReplicaError, ShuttingDown
from gre.batching.queue import Pending
from gre.batching.scheduler import Completed
from gre.http.binary_tensor import HEADER_LENGTH
from gre.http.errors import ApiError, ErrorCode
from gre.http.inference_request import (
    INPUT,
    OUTPUT,
    Json,
    ProtocolError,
    parse_infer_request,
    shown,
)
from gre.http.inference_response import infer_response
from gre.http.request_parts import (
    access_log,
    account,
    parse_timeout,
    read_body,
    refusal,
    request_id_of,
)
from gre.messages import ItemError, Prediction
from gre.model.imaging import ImageError, check_image
from gre.service import Service

#: ``platform`` in model metadata and config (the protocol's "<project>_<format>" has no
#: Caffe entry).
PLATFORM = "caffe"
#: What ``GET /v2`` lists (the extensions' names are Triton's).
EXTENSIONS = ("classification", "binary_tensor_data", "model_configuration")

Handler = Callable[[Request], Awaitable[Response]]


class _ImageFailed(Exception):
    """Image ``index`` of a request got ``error`` from the scheduler instead of an answer."""

    def __init__(self, index: int, error: BaseException) -> None:
        super().__init__(index, error)
        self.index = index
        self.error = error


class _ClientGone(Exception):
    """The client disconnected while its images waited."""


def answers_errors(handler: Handler) -> Handler:
    """``handler``, with a :class:`ProtocolError` it raises answered in the protocol's shape."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except ProtocolError as exc:
            return exc.response()

    return wrapped


# The model: name and version


def model_version(service: Service) -> str:
    """The version serving now: its generation, ``"1"`` at start-up, +1 per reload (the
    protocol's versions are strings; Triton's are increasing integers)."""
    return str(service.specs[0].generation)


def served_model(request: Request) -> Service:
    """The service, once the path's ``name`` (and ``version``, when given) is the model
    serving now.

    Raises:
        ProtocolError: 404, an unknown model or version.
    """
    service: Service = request.app.state.service
    name = request.path_params["name"]
    version = request.path_params.get("version")
    served = service.model.name
    if name != served:
        raise ProtocolError(404, f"unknown model {shown(name)}: gre serves '{served}'")
    if version is not None and version != model_version(service):
        raise ProtocolError(
            404,
            f"unknown version {shown(version)} of model '{name}': version "
            f"'{model_version(service)}' serves",
        )
    return service


def classes_or_unknown(service: Service) -> int:
    """The class count, or -1 (the protocol's variable dimension) until a replica reports
    it for a net without configured labels."""
    return service.num_classes or -1


# Health and metadata


async def server_metadata(request: Request) -> Response:
    """``GET /v2``: the server's name, version and extensions."""
    return JSONResponse({"name": "gre", "version": gre.__version__, "extensions": EXTENSIONS})


async def server_live(request: Request) -> Response:
    """``GET /v2/health/live``: 200 while the process answers."""
    return JSONResponse({"live": True})


async def server_ready(request: Request) -> Response:
    """``GET /v2/health/ready``: 200 when ``/readyz`` is, else 503."""
    service: Service = request.app.state.service
    ready = service.readiness().ready
    return JSONResponse({"ready": ready}, 200 if ready else 503)


@answers_errors
async def model_ready(request: Request) -> Response:
    """``GET /v2/models/{name}[/versions/{version}]/ready``: as ``/v2/health/ready``, for
    the model serving; 404 for any other."""
    service = served_model(request)
    ready = service.readiness().ready
    return JSONResponse({"name": service.model.name, "ready": ready}, 200 if ready else 503)


@answers_errors
async def model_metadata(request: Request) -> Response:
    """``GET /v2/models/{name}[/versions/{version}]``: the model's input and output."""
    service = served_model(request)
    return JSONResponse(
        {
            "name": service.model.name,
            "versions": [model_version(service)],
            "platform": PLATFORM,
            "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1, 1]}],
            "outputs": [
                {"name": OUTPUT, "datatype": "FP32", "shape": [-1, classes_or_unknown(service)]}
            ],
        }
    )


@answers_errors
async def model_config(request: Request) -> Response:
    """``GET /v2/models/{name}[/versions/{version}]/config``: the model as Triton's
    ModelConfig (triton-inference-server/common, protobuf/model_config.proto), as JSON."""
    return JSONResponse(triton_model_config(served_model(request)))


def triton_model_config(service: Service) -> Json:
    """The serving model's Triton ModelConfig: batching from ``[batching]`` (ms as µs), one
    instance group per device from the replicas."""
    batching = service.config.batching
    return {
        "name": service.model.name,
        "platform": PLATFORM,
        "backend": service.model.engine,
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": batching.max_batch_size,
        "input": [
            {"name": INPUT, "data_type": "TYPE_STRING", "format": "FORMAT_NONE", "dims": [1]}
        ],
        "output": [
            {"name": OUTPUT, "data_type": "TYPE_FP32", "dims": [classes_or_unknown(service)]}
        ],
        "dynamic_batching": {
            "max_queue_delay_microseconds": round(batching.max_queue_delay_ms * 1000),
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": round(batching.timeout_ms * 1000),
                "allow_timeout_override": True,
                "max_queue_size": batching.max_queue_size,
            },
        },
        "instance_group": instance_groups(service),
    }


def instance_groups(service: Service) -> list[Json]:
    """Triton's ``instance_group``: per device, in plan order, how many replicas run there."""
    counts: dict[str, int] = {}
    for plan in service.plans:
        counts[str(plan.device)] = counts.get(str(plan.device), 0) + 1
    groups: list[Json] = []
    for number, (device, count) in enumerate(counts.items()):
        group: Json = {"name": f"{service.model.name}_{number}", "count": count}
        if device == "cpu":
            group["kind"] = "KIND_CPU"
        else:
            group.update(kind="KIND_GPU", gpus=[int(device.removeprefix("gpu:"))])
        groups.append(group)
    return groups


# Inference


async def infer(request: Request) -> Response:
    """``POST /v2/models/{name}[/versions/{version}]/infer``: classify the request's images.

    Every answer carries ``X-Request-Id``, counts in ``gre_requests_total`` (and a refusal
    in ``gre_rejected_total``, as ``/api/classify``'s), and is logged as one JSON line.
    """
    service: Service = request.app.state.service
    start = time.perf_counter()
    request_id, record = request_id_of(request.headers.get("x-request-id"))
    try:
        response = await _infer(request, record)
    except ProtocolError as exc:
        record.update(error=exc.code.value if exc.code else "protocol", reason=exc.message)
        if exc.code is not None and exc.code.reason is not None:
            service.metrics.rejected.labels(exc.code.reason).inc()
        response = exc.response()
    except Exception:
        access_log.exception("unexpected error", extra={"request_id": request_id})
        record.update(error=ErrorCode.INTERNAL.value, reason="unexpected error")
        message = f"internal error; the log has its details under request id {request_id}"
        response = JSONResponse({"error": message}, 500)
    response.headers["X-Request-Id"] = request_id
    account(service, response.status_code, time.perf_counter() - start, record)
    return response


async def _infer(request: Request, record: dict[str, Any]) -> Response:
    service = served_model(request)
    model = service.model.name
    try:
        timeout_ms = parse_timeout(request)
        # Refused after the upload means refused before it: don't take the body for nothing.
        _admit(service, timeout_ms)
        body = await read_body(request, service.config.server.max_body_bytes)
    except ApiError as exc:
        raise ProtocolError.of(exc) from None
    except ClientDisconnect:  # gone mid-body, or cut off by server.body_timeout_s
        return Response(status_code=499)  # never sent: nobody is listening
    record["bytes"] = len(body)
    parsed = parse_infer_request(
        body, request.headers.get(HEADER_LENGTH), service.config.batching.max_batch_size
    )
    record["images"] = len(parsed.images)
    check_images(parsed.images, service.config.server.max_pixels)
    timeouts = [t for t in (timeout_ms, parsed.timeout_ms) if t is not None]
    pendings = submit_all(service, parsed.images, min(timeouts) if timeouts else None)
    try:
        completed = await wait_for_all(request, service, pendings)
    except _ClientGone:
        return Response(status_code=499)  # never sent: nobody is listening
    except _ImageFailed as exc:
        if not isinstance(exc.error, DeadlineExceeded | ReplicaError | ShuttingDown):
            raise exc.error from None
        raise ProtocolError.of(refusal(exc.error), exc.index, len(pendings)) from None
    _record(service, completed, record)
    predictions = outcomes(completed)
    labels = [[entry["label"] for entry in service.answer(c)] for c in completed]
    return infer_response(model, parsed, predictions, labels)


def _admit(service: Service, timeout_ms: float | None) -> None:
    """Refuse now (raising :class:`ApiError`) what the scheduler would not queue."""
    try:
        service.admit(timeout_ms)
    except (QueueFull, ShuttingDown) as exc:
        raise refusal(exc) from None


def check_images(images: Sequence[bytes], max_pixels: int) -> None:
    """Each image's header checks, as ``/api/classify``'s (before anything is queued).

    Raises:
        ProtocolError: the first image refused, by its index.
    """
    for index, image in enumerate(images):
        try:
            check_image(image, max_pixels)
        except ImageError as exc:
            error = ApiError(ErrorCode(exc.code), str(exc))
            raise ProtocolError.of(error, index, len(images)) from None


def submit_all(
    service: Service, images: Sequence[bytes], timeout_ms: float | None
) -> list[Pending]:
    """Admit and queue each image in turn, without yielding to the event loop: no replica
    takes a batch before the last is queued, so they can share one. Each asks for every
    class (its whole probability vector).

    Raises:
        ProtocolError: 503 when image ``i`` is refused (the ones queued before it are
            dropped), or when the class count is not known yet (no replica has loaded).
    """
    classes = service.num_classes
    if classes is None:
        raise ProtocolError(503, "no replica has loaded the model yet", retry_after=True)
    pendings: list[Pending] = []
    try:
        for image in images:
            pendings.append(service.submit(service.admit(timeout_ms), image, classes))
    except (QueueFull, ShuttingDown) as exc:
        for pending in pendings:
            service.cancel(pending)
        raise ProtocolError.of(refusal(exc), len(pendings), len(images)) from None
    return pendings


async def wait_for_all(
    request: Request, service: Service, pendings: Sequence[Pending]
) -> list[Completed]:
    """Wait for every image's answer (in request order), dropping them all from the queue
    if the client disconnects or one of them fails.

    Raises:
        _ImageFailed: an image got an error from the scheduler (the lowest index first).
        _ClientGone: the client disconnected first.
    """
    answers = [asyncio.ensure_future(service.result(p)) for p in pendings]
    disconnect = asyncio.ensure_future(request.receive())
    try:
        waiting: set[asyncio.Future[Any]] = set(answers)
        while waiting:
            done, _ = await asyncio.wait(
                {*waiting, disconnect}, return_when=asyncio.FIRST_COMPLETED
            )
            waiting -= done
            for index, answer in enumerate(answers):
                error = answer.exception() if answer in done else None
                if error is not None:
                    raise _ImageFailed(index, error)
            if disconnect in done:
                if disconnect.result()["type"] == "http.disconnect":
                    raise _ClientGone
                disconnect = asyncio.ensure_future(request.receive())
        return [answer.result() for answer in answers]
    finally:
        disconnect.cancel()
        for pending, answer in zip(pendings, answers, strict=True):
            if not answer.done():
                answer.cancel()
                service.cancel(pending)


def outcomes(completed: Sequence[Completed]) -> list[Prediction]:
    """The images' predictions.

    Raises:
        ProtocolError: the first image a replica could not classify, by its index.
    """
    predictions = []
    for index, answer in enumerate(completed):
        if isinstance(answer.outcome, ItemError):
            error = ApiError(ErrorCode(answer.outcome.code), answer.outcome.message)
            raise ProtocolError.of(error, index, len(completed))
        predictions.append(answer.outcome)
    return predictions


def _record(service: Service, completed: Sequence[Completed], record: dict[str, Any]) -> None:
    """Log the images' batches and times; observe their time queued."""
    record.update(
        batch_sizes=[c.batch_size for c in completed],
        replicas=sorted({c.replica for c in completed}),
        queue_ms=max(c.queue_ms for c in completed),
        preprocess_ms=max(c.preprocess_ms for c in completed),
        inference_ms=max(c.inference_ms for c in completed),
    )
    for answer in completed:
        service.metrics.queue_duration.observe(answer.queue_ms / 1e3)


# Routes


def inference_protocol_routes(service: Service) -> list[BaseRoute]:
    """The ``/v2`` routes; each per-model route also with the protocol's optional
    ``/versions/{version}`` segment."""
    routes: list[BaseRoute] = [
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/health/live", server_live, methods=["GET"]),
        Route("/v2/health/ready", server_ready, methods=["GET"]),
    ]
    for model in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [
            Route(model, model_metadata, methods=["GET"]),
            Route(f"{model}/ready", model_ready, methods=["GET"]),
            Route(f"{model}/config", model_config, methods=["GET"]),
            Route(f"{model}/infer", infer, methods=["POST"]),
        ]
    return routes
