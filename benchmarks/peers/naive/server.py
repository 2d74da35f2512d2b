"""The naive peer: what one would write first. A Starlette endpoint runs gre's pipeline on each
request's image alone (one forward per request, no batching) in Starlette's thread pool, so the
event loop keeps receiving; a lock keeps one forward at a time (a cv2.dnn net is not
thread-safe). Runs in gre's own ``.venv`` (the same Starlette and Uvicorn as gre).

    python -m benchmarks.peers.naive.server --port P [--engine opencv|null]
"""

from __future__ import annotations

import argparse
import threading

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from benchmarks.peers.pipeline import Pipeline, Refused, Reply

#: No batching: each forward is one image.
BATCHING = {"max_batch_size": 1}


def create_app(engine: str) -> Starlette:
    """``POST /api/classify`` (raw image body, ``?top_k=``) and ``GET /api/model``."""
    pipeline = Pipeline(engine)
    lock = threading.Lock()

    def classify_one(image: bytes, top_k: int) -> Reply:
        with lock:
            return pipeline.classify([image], [top_k])[0]

    async def classify(request: Request) -> Response:
        try:
            top_k = pipeline.top_k(request.query_params.get("top_k"))
            image = await request.body()
            pipeline.check(image)
        except Refused as exc:
            reply = exc.reply
        else:
            reply = await run_in_threadpool(classify_one, image, top_k)
        return JSONResponse(reply.body, reply.status)

    async def model(request: Request) -> Response:
        return JSONResponse(pipeline.describe("naive", BATCHING))

    return Starlette(
        routes=[
            Route("/api/classify", classify, methods=["POST"]),
            Route("/api/model", model, methods=["GET"]),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the naive peer (no batching)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--engine", default="opencv")
    args = parser.parse_args(argv)
    app = create_app(args.engine)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
