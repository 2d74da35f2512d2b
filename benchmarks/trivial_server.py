"""A trivial HTTP endpoint that answers every request at once, to measure a load client's
own ceiling on this machine.

    python -m benchmarks.trivial_server --port 8099

Every request, whatever its method, path or body, gets ``200`` with the body ``[]``. It reads
requests with httptools on uvloop, so it costs far less per request than any real service:
what limits a client against it is mostly the client (on a small machine, the two still share
the cores, which makes the ceiling a conservative one).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import cast

import httptools
import uvloop

RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
    b"Server-Timing: queue;dur=0, inference;dur=0\r\n\r\n[]"
)


class TrivialProtocol(asyncio.Protocol):
    """Parses requests (bodies read and dropped) and answers each with :data:`RESPONSE`."""

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.close()

    def on_message_complete(self) -> None:
        if self._transport is None:
            return
        self._transport.write(RESPONSE)
        if not self._parser.should_keep_alive():
            self._transport.close()


async def serve(host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(TrivialProtocol, host, port, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"trivial server on http://{host}:{port}", flush=True)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
