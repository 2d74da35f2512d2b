"""The Triton peer: gre's pipeline as a PyTriton Python model behind Triton's own dynamic batcher
(the real ``tritonserver`` that ``nvidia-pytriton`` bundles, on the CPU), reached through a thin
front that speaks gre's API.

    python -m benchmarks.peers.triton.server --port P [--engine opencv|null]

One process (the peer's venv, made from Debian's ``/usr/bin/python3.11``: the Python backend
stub that PyTriton ships links Debian's ``libpython3.11``; the pipeline on gre's numpy and
OpenCV from the venv's ``pipeline-site``, the stub on the numpy 1.x PyTriton declares, see
``pipeline-requirements.txt``) runs:

- PyTriton's ``Triton``: it starts ``tritonserver`` (HTTP, gRPC and metrics bound to
  127.0.0.1 on free ports, so that nothing else can reach it and nothing clashes), whose
  Python backend stub hands each batch to this process over ZeroMQ and shared memory. The
  model ``gre`` has one instance and Triton's dynamic batcher: ``max_batch_size`` 32 (gre's),
  ``max_queue_delay_microseconds`` 0 (gre's ``max_queue_delay_ms`` default: an idle instance
  takes what is queued at once, up to 32, and does not wait for more). Inputs per request:
  ``image`` (BYTES, the checked body) and ``top_k`` (INT32); outputs ``status`` (INT32) and
  ``body`` (BYTES, the JSON gre answers). One call of :func:`infer` is one batch Triton formed:
  one forward, counted in ``batches_by_size``.
- The front: Starlette + Uvicorn (httptools, uvloop: gre's and the naive peer's HTTP stack) on
  127.0.0.1:P. ``POST /api/classify`` runs gre's checks before Triton's queue (as gre, BentoML
  and Ray Serve refuse before theirs: 400/413/415/422 in gre's shape), forwards the body to
  Triton's KServe v2 ``infer`` endpoint (binary tensor extension, keep-alive connections:
  :class:`KServeClient`) and answers the model's status and body as they are. ``GET
  /api/model`` tells the batching and ``batches_by_size``.

Why a front and not Triton directly: Triton speaks KServe v2, not gre's API (raw body in, gre's
JSON and refusals out), and the load harness sends gre's requests to every server alike. The
harness could be taught KServe v2, but then Triton would answer neither gre's JSON nor gre's
refusals, and the comparison would no longer be of the same service. The front costs one
extra local HTTP round trip per request (its HTTP parsing and the KServe encoding and
decoding, in the same process as the model's callable, under the same GIL), which a client
speaking KServe v2 to Triton would not pay. Measured here with the null engine at 32
connections (hey, the 2-core machine shared with other work, so roughly): about 0.5-0.6 ms of
CPU per request in this process, some 20 % of Triton's whole cost per request (about 2.9 ms
with the pipeline's decode and preprocessing of a 140 kB photo, 3.5 ms through the front);
at 32-64 connections 280-370 req/s through the front against 350-400 straight to Triton. The
report says so beside Triton's figures (``benchmarks.report.PEER_NOTES``). (Ray Serve's HTTP
proxy is a hop of its own too, but one that Ray Serve itself has.)

SIGTERM or SIGINT stops Uvicorn, then Triton (``tritonserver`` and the stub).
``GRE_TRITON_DEBUG=1`` turns PyTriton's debug log on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import struct
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import uvicorn
from pytriton.model_config import (  # type: ignore[import-not-found,unused-ignore]
    DynamicBatcher,
    ModelConfig,
    Tensor,
)
from pytriton.triton import Triton, TritonConfig  # type: ignore[import-not-found,unused-ignore]
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from benchmarks.httpclient import Connection, Target
from benchmarks.peers.pipeline import Pipeline, Refused
from gre.http.errors import ErrorCode

MODEL = "gre"
#: Triton's dynamic batcher, as gre's defaults: ``max_batch_size`` 32, no waiting for a fuller
#: batch (gre's ``max_queue_delay_ms`` = 0).
BATCHING: dict[str, Any] = {"max_batch_size": 32, "max_queue_delay_microseconds": 0}


def infer_fn(pipeline: Pipeline) -> Any:
    """PyTriton's inference callable: the requests of one dynamic batch, one forward."""

    def infer(requests: Sequence[Any]) -> list[dict[str, np.ndarray]]:
        images = [bytes(request["image"][0, 0]) for request in requests]
        top_ks = [int(request["top_k"][0, 0]) for request in requests]
        replies = pipeline.classify(images, top_ks)
        return [
            {
                "status": np.array([[reply.status]], dtype=np.int32),
                "body": np.array([[json.dumps(reply.body).encode()]], dtype=np.object_),
            }
            for reply in replies
        ]

    return infer


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 now (all held until all are chosen)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def start_triton(pipeline: Pipeline) -> tuple[Triton, int]:
    """Start ``tritonserver`` with the model loaded; returns it and its HTTP port."""
    http_port, grpc_port, metrics_port = free_ports(3)
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=http_port,
        grpc_address="127.0.0.1",
        grpc_port=grpc_port,
        metrics_address="127.0.0.1",
        metrics_port=metrics_port,
        log_verbose=0,
    )
    run = os.environ.get("GRE_PEER_RUN") or tempfile.mkdtemp()
    triton = Triton(config=config, workspace=os.path.join(run, "triton"))
    triton.bind(
        model_name=MODEL,
        infer_func=infer_fn(pipeline),
        inputs=[
            Tensor(name="image", dtype=np.bytes_, shape=(1,)),
            Tensor(name="top_k", dtype=np.int32, shape=(1,)),
        ],
        outputs=[
            Tensor(name="status", dtype=np.int32, shape=(1,)),
            Tensor(name="body", dtype=np.bytes_, shape=(1,)),
        ],
        config=ModelConfig(
            max_batch_size=BATCHING["max_batch_size"],
            batcher=DynamicBatcher(
                max_queue_delay_microseconds=BATCHING["max_queue_delay_microseconds"]
            ),
        ),
        strict=False,
    )
    triton.run()  # returns once the model is ready
    return triton, http_port


class TritonError(Exception):
    """Triton answered an error, or the connection to it failed."""


class KServeClient:
    """Triton's KServe v2 ``infer`` for one image, binary tensor extension, over keep-alive
    connections (one request at a time each, as many as requests in flight): each request is
    written in one call and its response parsed by httptools (:mod:`benchmarks.httpclient`,
    the load harness's own client).

    Not ``tritonclient.http.aio``: on this machine that took about three times the front's CPU
    per request (aiohttp, numpy object arrays, its InferResult), all of it on the cores Triton
    is measured on.
    """

    def __init__(self, port: int) -> None:
        self.target = Target("127.0.0.1", port, f"/v2/models/{MODEL}/infer")
        self.idle: list[Connection] = []

    async def infer(self, image: bytes, top_k: int) -> tuple[int, bytes]:
        """The model's ``(status, body)`` for ``image``.

        Raises:
            TritonError: Triton answered an error, or the connection failed.
        """
        header = json.dumps(
            {
                "inputs": [
                    _input("image", "BYTES", len(image) + 4),
                    _input("top_k", "INT32", 4),
                ],
                "outputs": [
                    {"name": name, "parameters": {"binary_data": True}}
                    for name in ("status", "body")
                ],
            },
            separators=(",", ":"),
        ).encode()
        length = len(header) + 4 + len(image) + 4
        head = (
            f"POST {self.target.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.target.port}\r\n"
            f"Content-Length: {length}\r\nInference-Header-Content-Length: {len(header)}\r\n\r\n"
        ).encode()
        request = b"".join(
            [head, header, struct.pack("<I", len(image)), image, struct.pack("<i", top_k)]
        )
        while self.idle and self.idle[-1].closed:
            self.idle.pop()
        try:
            connection = self.idle.pop() if self.idle else await Connection.open(self.target, True)
            response = await connection.send(request)
        except OSError as exc:  # ConnectionError included
            raise TritonError(f"Triton at {self.target.origin}: {exc}") from exc
        if not connection.closed:
            self.idle.append(connection)
        if response.status != 200:
            raise TritonError(f"Triton answered {response.status}: {response.body[:500]!r}")
        # The JSON header, then each output's bytes in its order; the header's length is in a
        # response header the lean client does not keep, so the JSON is parsed to its end.
        meta, offset = json.JSONDecoder().raw_decode(response.body.decode("latin-1"))
        outputs = {}
        for output in meta["outputs"]:
            size = output["parameters"]["binary_data_size"]
            outputs[output["name"]] = response.body[offset : offset + size]
            offset += size
        (status,) = struct.unpack("<i", outputs["status"])
        return status, outputs["body"][4:]  # one BYTES element: its length, then its bytes

    def close(self) -> None:
        for connection in self.idle:
            connection.close()
        self.idle.clear()


def _input(name: str, datatype: str, size: int) -> dict[str, Any]:
    return {
        "name": name,
        "shape": [1, 1],
        "datatype": datatype,
        "parameters": {"binary_data_size": size},
    }


def create_app(pipeline: Pipeline, triton_port: int) -> Starlette:
    """The front: ``POST /api/classify`` (raw image body, ``?top_k=``), ``GET /api/model``."""
    client = KServeClient(triton_port)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            client.close()

    async def classify(request: Request) -> Response:
        try:
            top_k = pipeline.top_k(request.query_params.get("top_k"))
            image = await request.body()
            pipeline.check(image)
        except Refused as exc:
            return JSONResponse(exc.reply.body, exc.reply.status)
        try:
            status, body = await client.infer(image, top_k)
        except TritonError as exc:  # as gre answers a batch its replica failed
            code = ErrorCode.REPLICA_FAILED
            return JSONResponse({"error": code.value, "message": str(exc)}, code.status)
        return Response(body, status, media_type="application/json")

    async def model(request: Request) -> Response:
        return JSONResponse(pipeline.describe("triton", BATCHING))

    return Starlette(
        routes=[
            Route("/api/classify", classify, methods=["POST"]),
            Route("/api/model", model, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the Triton peer (Triton's dynamic batcher)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--engine", default="opencv")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if os.environ.get("GRE_TRITON_DEBUG") else logging.WARNING
    )
    pipeline = Pipeline(args.engine)
    triton, triton_port = start_triton(pipeline)
    # Uvicorn re-raises the SIGTERM it caught once it has stopped: as SystemExit, so that the
    # finally below stops Triton (the default action would end this process first).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        app = create_app(pipeline, triton_port)
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    finally:
        triton.stop()


if __name__ == "__main__":
    main()
