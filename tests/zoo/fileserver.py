"""A real HTTP file server on 127.0.0.1 for the zoo's tests: serves bytes from a dict, honours
``Range: bytes=N-`` (RFC 9110 §14.2: 206 with Content-Range, 416 past the end) unless told to
ignore it, can cut a body short (send Content-Length, then close early), and records every
request's path and headers."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_RANGE = re.compile(r"^bytes=(\d+)-$")


@dataclass
class Seen:
    """One request the server answered."""

    path: str
    headers: dict[str, str]

    @property
    def range(self) -> str | None:
        return self.headers.get("range")


@dataclass
class Files:
    """What the server serves and how; tests change it between runs."""

    #: URL path (``/a/b.bin``) to bytes.
    content: dict[str, bytes] = field(default_factory=dict)
    #: Answer 200 with the whole file whatever the Range header says.
    ignore_range: bool = False
    #: Close the connection after this many body bytes (the full Content-Length announced).
    cut_after: int | None = None
    seen: list[Seen] = field(default_factory=list)
    base: str = ""

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def ranges(self) -> list[str | None]:
        """The Range header of each request so far, in order."""
        return [s.range for s in self.seen]


def _handler(files: Files) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

        def do_GET(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            files.seen.append(Seen(self.path, headers))
            body = files.content.get(self.path)
            if body is None:
                self._send(404, b"not found", {})
                return
            match = _RANGE.match(headers.get("range", ""))
            if match is None or files.ignore_range:
                self._send(200, body, {})
                return
            start = int(match[1])
            if start >= len(body):
                self._send(416, b"", {"Content-Range": f"bytes */{len(body)}"})
                return
            extra = {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}
            self._send(206, body[start:], extra)

        def _send(self, status: int, body: bytes, extra: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            for name, value in extra.items():
                self.send_header(name, value)
            cut = files.cut_after
            if cut is not None and cut < len(body):
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.end_headers()
            self.wfile.write(body)

    return Handler


@contextmanager
def serving(files: Files | None = None) -> Iterator[Files]:
    """Serve ``files`` on 127.0.0.1 (a free port) for the ``with`` block; ``files.base`` is
    ``http://127.0.0.1:PORT``."""
    files = files or Files()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(files))
    server.daemon_threads = True
    files.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield files
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
