"""A lean HTTP/1.1 keep-alive client connection for load generation.

httpx and aiohttp spend tens of microseconds of Python per request on features a load
generator does not need (redirects, cookies, header objects); on a 2-core machine that shares
its cores with the server under test, those microseconds come straight off the server's
figure. Here each request is one pre-built ``bytes`` write and the response is parsed by
httptools (the C parser uvicorn uses), keeping only the status and ``Server-Timing``.
One request at a time per connection (no pipelining), as browsers, hey and wrk do.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Self, cast
from urllib.parse import urlsplit

import httptools


@dataclass(frozen=True)
class Target:
    """Where requests go: ``host``, ``port`` and the request target (path + query)."""

    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> Target:
        """``http://host[:port]/path?query`` -> Target (port 80 by default).

        Raises:
            ValueError: not an ``http://`` URL (https is not supported: a benchmark on one
                machine has no use for TLS).
        """
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"expected an http://host[:port]/path URL, got {url!r}")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.hostname, parts.port or 80, path)

    @property
    def origin(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    def with_path(self, path: str) -> Target:
        """The same server, another path (e.g. ``/api/model``)."""
        return Target(self.host, self.port, path)


def build_request(target: Target, method: str, body: bytes = b"", content_type: str = "") -> bytes:
    """The complete HTTP/1.1 request, head and body, ready to write as it is."""
    head = [f"{method} {target.path} HTTP/1.1", f"Host: {target.host}:{target.port}"]
    if body or method in ("POST", "PUT"):
        head.append(f"Content-Length: {len(body)}")
    if content_type:
        head.append(f"Content-Type: {content_type}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


@dataclass(frozen=True)
class Response:
    """What the load generator keeps of a response: status, ``Server-Timing`` (raw, or
    ``b""``), the body only when asked for, and whether the connection stays open."""

    status: int
    server_timing: bytes
    body: bytes
    keep_alive: bool


class Connection(asyncio.Protocol):
    """One keep-alive connection; :meth:`send` one request at a time.

    Raises (from :meth:`send`): ConnectionError when the server closes or resets the
    connection before the response is complete, or sends something that is not HTTP.
    """

    def __init__(self, keep_body: bool = False) -> None:
        self._keep_body = keep_body
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self._timing = b""
        self._body: list[bytes] = []
        self.closed = False

    @classmethod
    async def open(cls, target: Target, keep_body: bool = False) -> Self:
        """Connect to ``target`` (raises OSError when refused)."""
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(lambda: cls(keep_body), target.host, target.port)
        return protocol

    def send(self, request: bytes) -> asyncio.Future[Response]:
        """Write ``request`` (from :func:`build_request`); the future gets the response."""
        if self.closed or self._transport is None:
            raise ConnectionError("connection closed")
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._transport.write(request)
        return waiter

    def close(self) -> None:
        """Close the socket; a pending :meth:`send` fails with ConnectionError."""
        if self._transport is not None:
            self._transport.close()
        self.closed = True

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad HTTP response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError(f"connection lost: {exc or 'closed by the server'}"))

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._timing = b""
        self._body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 13 and name.lower() == b"server-timing":
            self._timing = value

    def on_body(self, body: bytes) -> None:
        if self._keep_body:
            self._body.append(body)

    def on_message_complete(self) -> None:
        keep_alive = self._parser.should_keep_alive()
        response = Response(
            self._parser.get_status_code(), self._timing, b"".join(self._body), keep_alive
        )
        if not keep_alive:
            self.close()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


async def fetch(target: Target, method: str = "GET", body: bytes = b"") -> Response:
    """One request on a fresh connection, body kept (for probes such as ``/api/model``).

    Raises:
        OSError: the server is not there; ConnectionError: it hung up.
    """
    connection = await Connection.open(target, keep_body=True)
    try:
        return await connection.send(build_request(target, method, body))
    finally:
        connection.close()
