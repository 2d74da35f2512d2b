"""The Ray Serve peer: gre's pipeline in one Ray Serve deployment replica whose ``__call__``
takes the HTTP request (Ray Serve's Starlette ingress) and hands each checked image to a
``@serve.batch`` method: one forward per batch, run in a thread so that the replica keeps
receiving while it computes.

    python -m benchmarks.peers.rayserve.server --port P [--engine opencv|null]

Ray runs minimally: a local cluster of ``os.cpu_count()`` CPUs on 127.0.0.1, no dashboard,
usage stats off, a 256 MiB object store, its files under ``$GRE_PEER_RUN`` (the launcher's run
folder) or a new temporary folder; Serve's HTTP proxy on 127.0.0.1:P, access log off. SIGTERM
or SIGINT shuts Serve and Ray down (a few seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import tempfile
import threading
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from benchmarks.peers.pipeline import Pipeline, Refused, Reply

#: gre's ``max_batch_size``; Ray Serve forms a batch from the requests that arrive within
#: ``batch_wait_timeout_s`` of its first (its default, 10 ms; 0 would make it release
#: batches of one while the previous batch runs, since it forms the next batch without waiting
#: for the running one), and runs one batch at a time (``max_concurrent_batches``, default 1).
BATCHING: dict[str, Any] = {"max_batch_size": 32, "batch_wait_timeout_s": 0.01}
#: Requests a replica takes at once: gre's ``max_queue_size``; Ray's default (5) would cap
#: every batch at 5.
MAX_ONGOING_REQUESTS = 256


@serve.deployment(
    num_replicas=1,
    max_ongoing_requests=MAX_ONGOING_REQUESTS,
    logging_config={"enable_access_log": False, "log_level": "WARNING"},
)
class GrePeer:
    """The model, loaded once in the replica actor."""

    def __init__(self, engine: str) -> None:
        self.pipeline = Pipeline(engine)

    async def __call__(self, request: Request) -> Response:
        path, method = request.url.path, request.method
        if path == "/api/model" and method == "GET":
            return JSONResponse(self.pipeline.describe("rayserve", BATCHING))
        if path != "/api/classify" or method != "POST":
            error = ("not_found", 404) if path != "/api/classify" else ("method_not_allowed", 405)
            message = f"{method} {path} is not served"
            return JSONResponse({"error": error[0], "message": message}, error[1])
        try:
            top_k = self.pipeline.top_k(request.query_params.get("top_k"))
            image = await request.body()
            self.pipeline.check(image)
        except Refused as exc:
            reply = exc.reply
        else:
            reply = await self.classify((image, top_k))
        return JSONResponse(reply.body, reply.status)

    @serve.batch(**BATCHING)
    async def classify(self, items: list[tuple[bytes, int]]) -> list[Reply]:
        images, top_ks = [image for image, _ in items], [k for _, k in items]
        return await asyncio.to_thread(self.pipeline.classify, images, top_ks)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the Ray Serve peer (@serve.batch)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--engine", default="opencv")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    # Short: Ray's Unix socket paths under it must stay within 107 bytes.
    temp_dir = os.path.join(os.environ.get("GRE_PEER_RUN") or tempfile.mkdtemp(), "r")
    ray.init(
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        object_store_memory=256 * 1024 * 1024,
        _node_ip_address="127.0.0.1",
        _temp_dir=temp_dir,
    )
    # After ray.init, which installs handlers of its own that end the driver at once.
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        app = GrePeer.bind(args.engine)  # type: ignore[attr-defined]  # @serve.deployment's
        serve.run(app, name="gre_peer", route_prefix="/")
        stop.wait()
        serve.shutdown()
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
