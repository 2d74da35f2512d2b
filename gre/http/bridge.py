"""ASGI over a socket: what an HTTP worker process and the primary say about each request.

With ``server.workers = N > 1``, N worker processes parse HTTP (uvicorn, gre's connection
protocol and its limits) on one shared listening socket, and the primary process, which owns
the scheduler and the replicas, runs gre's application for every request. Each request
crosses the worker's socketpair as messages, framed as the replicas' (:mod:`gre.replicas.wire`):

worker -> primary
    ``(HEAD, id, scope, body, more_body)``: a request, with the body's first chunk;
    ``(CLASSIFY, id, sent, checked, started, body)``: a ``POST /api/classify`` whose body
    came whole with its head, already read by the worker: what the exchange reads of the
    head (:class:`gre.http.classify_exchange.Sent`), the image check's outcome
    (:func:`gre.http.classify_exchange.checked_image`), both as plain tuples (made whole
    again by ``sent_from`` and ``checked_from``), and when the head was in
    (``time.perf_counter``, s), so the primary only admits, queues and answers it; the body
    as bytes, or as its ``(position, length)`` in the worker's body ring
    (:mod:`gre.http.body_ring`);
    ``(BODY, id, body, more_body)``: the next chunk, when the primary asked for it;
    ``(WHOLE, id, checked, body)``: a classify request's whole body, when the primary fetched
    it, with the image check's outcome (``None``: the primary checks it), the body as in
    ``CLASSIFY``;
    ``(GONE, id)``: the client left (the connection was lost, or cut off mid-body);
    ``(REJECTED, reason)``: the worker's protocol refused a connection or request itself
    (``gre_rejected_total``); ``(HELD, bytes)``: its body budget's holding, when it changes;
    ``(LISTENING,)``: it accepts connections now (once, after start-up).

primary -> worker
    ``(MORE, id)``: the application wants the next chunk (bodies are pulled, so uvicorn's
    flow control and the refusals before an upload work as in one process);
    ``(FETCH, id)``: a classify request was admitted: read its whole body, check it, send it
    (a worker that checks images sends a classify request whose body did not come whole
    with its head as ``HEAD`` without any of the body, then ``WHOLE``);
    ``(RESPONSE, id, status, headers, body)``: a whole answer, in one message;
    ``(START, id, status, headers)`` then ``(CHUNK, id, body, more_body)``: a streamed one;
    ``(LABELS, key, labels, forget)`` then ``(ANSWER, id, key, ...)``: a classify request's
    200 as its prediction, which the worker encodes (:mod:`gre.http.bridge_answers`);
    ``(TAKEN, position)``: the primary has read the body ring up to ``position``;
    ``(STOP,)``: the primary has drained: stop accepting, finish, exit.

Only the scope's plain values cross (:func:`portable_scope`); the primary adds its own
``extensions`` (:class:`gre.http.protocol.LostConnection`) and ``state``.
"""

from __future__ import annotations

import socket
from typing import Any

from starlette.types import Scope

HEAD, CLASSIFY, BODY, WHOLE, GONE, REJECTED, HELD, LISTENING = (
    "head", "classify", "body", "whole", "gone", "rejected", "held", "listening",
)  # fmt: skip
MORE, FETCH, RESPONSE, START, CHUNK, LABELS, ANSWER, TAKEN, STOP = (
    "more", "fetch", "response", "start", "chunk", "labels", "answer", "taken", "stop",
)  # fmt: skip

#: The HTTP scope keys that cross (ASGI's, without ``extensions``, ``state`` or ``app``).
SCOPE_KEYS = (
    "type", "asgi", "http_version", "server", "client", "scheme", "method", "root_path",
    "path", "raw_path", "query_string", "headers",
)  # fmt: skip


def portable_scope(scope: Scope) -> dict[str, Any]:
    """The part of an HTTP ``scope`` that can be pickled to the primary: ASGI's plain values,
    headers as a list of ``(bytes, bytes)`` pairs."""
    out = {key: scope[key] for key in SCOPE_KEYS if key in scope}
    out["headers"] = [(bytes(name), bytes(value)) for name, value in scope["headers"]]
    return out


def port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` with ``SO_REUSEPORT`` (and ``SO_REUSEADDR``), not
    yet listening: the primary's reservation, or a worker's listener once it listens.

    Raises:
        OSError: the address cannot be bound (in use by another user's socket, say).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock
