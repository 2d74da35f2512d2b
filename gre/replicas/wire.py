"""Messages between gre's processes: length-prefixed pickles on a socket.

The front end speaks asyncio streams with a replica (it never blocks its event loop on one);
the replica speaks blocking sockets. The HTTP workers' bridge (:mod:`gre.http.bridge`), where
many messages are in flight at once, reads with :class:`FrameReader` and writes with
:class:`FrameWriter`. Every side is gre, so pickle is safe here: each socket is a private
socketpair, never a network port.
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


#: Most bytes :class:`FrameReader` asks its stream for at once.
READ_BYTES = 1 << 18


class FrameReader:
    """Messages from an asyncio stream, every whole frame that has arrived at once: one
    wait per read of the stream, not two per message (:func:`read`'s), for a peer that sends
    many at a time (an HTTP worker's requests, the primary's answers).

    Args:
        reader: the stream.
    """

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._buffer = bytearray()

    async def read(self) -> list[Any]:
        """The next messages, at least one, in the order sent.

        Raises:
            asyncio.IncompleteReadError: the peer closed the connection (mid-frame or not)
                before another message.
        """
        while True:
            data = await self._reader.read(READ_BYTES)
            if not data:
                raise asyncio.IncompleteReadError(bytes(self._buffer), None)
            if self._buffer:  # the rest of a frame begun in an earlier read
                self._buffer += data
                messages, used = _whole_frames(self._buffer)
                del self._buffer[:used]
            else:  # nearly always: whole frames, parsed where they arrived
                messages, used = _whole_frames(data)
                self._buffer += data[used:]
            if messages:
                return messages


def _whole_frames(data: bytes | bytearray) -> tuple[list[Any], int]:
    """The messages of the whole frames at the start of ``data``, and the bytes they take."""
    messages: list[Any] = []
    pos = 0
    with memoryview(data) as view:  # released before a bytearray is resized
        while pos + _HEADER.size <= len(data):
            (size,) = _HEADER.unpack_from(data, pos)
            end = pos + _HEADER.size + size
            if end > len(data):
                break
            messages.append(pickle.loads(view[pos + _HEADER.size : end]))
            pos = end
    return messages, pos


class FrameWriter:
    """Frames sent in one event-loop iteration leave in one write, at the next: a batch's
    answers, or a burst of requests, cost one system call rather than one each.

    Args:
        writer: the stream.
    """

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._frames: list[bytes] = []

    def send(self, message: Any) -> None:
        """Queue ``message`` for the next write (dropped once the stream is closing)."""
        if not self._frames:
            asyncio.get_running_loop().call_soon(self.flush)
        self._frames.append(pack(message))

    def flush(self) -> None:
        """Write what is queued now (before closing the stream, so that it is not lost)."""
        frames, self._frames = self._frames, []
        if frames and not self.writer.is_closing():
            self.writer.write(frames[0] if len(frames) == 1 else b"".join(frames))
