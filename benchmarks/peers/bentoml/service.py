"""The BentoML service: gre's pipeline behind a batchable ``@bentoml.api`` (BentoML's adaptive
batching, its CORK dispatcher: one batch at a time, released when waiting longer is estimated
not to pay, from a regression of recent batch times), one worker process, CPU only.

BentoML APIs take JSON or multipart, so two small pieces make it answer gre's API (a raw image
body at ``POST /api/classify``, gre's JSON and errors): an ASGI middleware runs gre's checks
before BentoML's queue (refusals in gre's shape) and answers ``GET /api/model``; the API's
``input_spec`` takes the checked image from the request and its ``output_spec`` writes each
image's answer with its own status. Imported by BentoML's worker process; the engine comes from
``GRE_ENGINE`` (set by ``server.py``), as for gre.
"""

from __future__ import annotations

import os
from typing import Any

import bentoml
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from benchmarks.peers.pipeline import Pipeline, Refused, Reply

#: gre's defaults: ``max_batch_size`` 32; ``max_latency_ms`` is BentoML's latency target, past
#: which it answers 503: gre's ``timeout_ms`` (10 s), the same role.
BATCHING = {"max_batch_size": 32, "max_latency_ms": 10_000}
#: Where the middleware leaves the checked ``(image, top_k)`` for :class:`RawImage`.
STATE_KEY = "gre_image"


class RawImage(bentoml.IODescriptor):
    """One request's batch of one: ``[(image bytes, top_k)]``, as the middleware checked it."""

    images: list[tuple[bytes, int]]

    @classmethod
    async def from_http_request(cls, request: Request, serde: Any) -> RawImage:
        return cls.model_construct(images=[request.scope["state"][STATE_KEY]])


class Answer(bentoml.IODescriptor):
    """One request's share of a batch, ``[Reply]``, written as gre writes it."""

    @classmethod
    async def to_http_response(cls, obj: Any, serde: Any) -> Response:
        (reply,) = obj
        return JSONResponse(reply.body, reply.status)


@bentoml.service(
    name="gre_peer",
    workers=1,
    traffic={"timeout": 60},
    metrics={"enabled": False},
    logging={"access": {"enabled": False}},
)
class GrePeer:
    """The model, loaded once per worker."""

    def __init__(self) -> None:
        self.pipeline = Pipeline(os.environ.get("GRE_ENGINE", "opencv"))

    @bentoml.api(
        route="/api/classify",
        batchable=True,
        input_spec=RawImage,
        output_spec=Answer,
        **BATCHING,
    )
    def classify(self, images: list[tuple[bytes, int]]) -> list[Reply]:
        """One forward for the whole batch (BentoML runs one batch at a time, in a thread)."""
        return self.pipeline.classify([image for image, _ in images], [k for _, k in images])


class GreApi:
    """Pure ASGI middleware: gre's refusals before BentoML's queue, and ``GET /api/model``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        pipeline: Pipeline = bentoml.get_current_service().pipeline
        request = Request(scope, receive)
        if scope["path"] == "/api/model" and scope["method"] == "GET":
            await JSONResponse(pipeline.describe("bentoml", BATCHING))(scope, receive, send)
            return
        if scope["path"] != "/api/classify" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            top_k = pipeline.top_k(request.query_params.get("top_k"))
            image = await request.body()
            pipeline.check(image)
        except Refused as exc:
            await JSONResponse(exc.reply.body, exc.reply.status)(scope, receive, send)
            return
        scope.setdefault("state", {})[STATE_KEY] = (image, top_k)
        await self.app(scope, receive, send)


GrePeer.add_asgi_middleware(GreApi)  # type: ignore[attr-defined]  # @bentoml.service's
