"""Messages between the front end and a replica process: length-prefixed pickles on a socket.

The front end speaks asyncio streams (it never blocks its event loop on a replica); the
replica speaks blocking sockets. Both sides are gre, so pickle is safe here: the socket is a
private socketpair, never a network port.
"""

from __future__ import annotations

import asyncio
import pickle
import socket
import struct
from typing import Any

_HEADER = struct.Struct("!I")


def pack(message: Any) -> bytes:
    """Frame ``message``: 4-byte big-endian length, then its pickle."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


def send(sock: socket.socket, message: Any) -> None:
    """Send one message on a blocking socket."""
    sock.sendall(pack(message))


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise EOFError("the peer closed the connection")
        got += n
    return bytes(buffer)


def recv(sock: socket.socket) -> Any:
    """Receive one message on a blocking socket; raises ``EOFError`` when the peer is gone."""
    (size,) = _HEADER.unpack(_recv_exactly(sock, _HEADER.size))
    return pickle.loads(_recv_exactly(sock, size))


async def read(reader: asyncio.StreamReader) -> Any:
    """Receive one message from an asyncio stream.

    Raises:
        asyncio.IncompleteReadError: the peer closed the connection (the replica died).
    """
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    return pickle.loads(await reader.readexactly(size))
