"""A trivial Starlette endpoint on uvicorn: the yardstick for gre's own cost per request.

    python -m benchmarks.trivial_starlette --port 8099

Every GET or POST, whatever its path, has its whole body read and gets ``200`` with the fixed
JSON body ``[]``. It runs on the same stack as gre's front end (Starlette on uvicorn, httptools
on uvloop, access log off) and does nothing else, so its CPU per request is what that stack
costs; :mod:`benchmarks.overhead` divides gre's CPU per request by it.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

#: Encoded once: the endpoint's answer costs no JSON encoding per request.
BODY = b"[]"


async def endpoint(request: Request) -> Response:
    """Read the whole body (as gre's handlers do), then answer ``[]``."""
    await request.body()
    return Response(BODY, media_type="application/json")


app = Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST"])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app, host=args.host, port=args.port, loop="uvloop", http="httptools",
        access_log=False, log_level="warning",
    )  # fmt: skip


if __name__ == "__main__":
    main()
