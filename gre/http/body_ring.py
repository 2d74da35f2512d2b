"""The body ring: shared memory through which an HTTP worker's classify bodies cross to the
primary (bridge ``CLASSIFY``), instead of inside the bridge's pickles.

A 140 KB photo inside a pickle is copied some eight times between the worker's request and
the scheduler: the pickle, its framing, the socket's write and read, the stream's buffer, the
read's slice, the frame's reassembly, the unpickle. Through the ring it is copied twice: into
it by the worker, out of it by the primary as it reads the request's message.

The primary makes one memfd (Linux's anonymous shared memory) of :data:`RING_BYTES` per worker
process and passes it at spawn, as it does a replica's image arena
(:mod:`gre.replicas.arena`). The worker writes each body after the last, wrapping at the end.
The primary copies bodies out in the order they were written, each as soon as it reads its
message, and after each read of the bridge says how far it got (``(TAKEN, position)``), which
frees the ring up to there. A body smaller than :data:`INLINE_BELOW` (its ack would cost more
than its copies), or one larger than the ring, crosses inline as before; one the ring has no
room for now waits in the worker until the primary has read further: crossing inline, a body is
copied into both processes' buffers at once, and a burst of 3.3 MiB photos with 2 workers held
those copies beside the queued bodies, past the body budget.

Positions are byte counts since the ring was made (Python ints do not wrap); a body's place in
the memory is its position modulo the size.
"""

from __future__ import annotations

import mmap
import os

#: The ring's size, bytes: room for about 60 photos of 140 KB between a worker's write and the
#: primary's read. Pages are allocated as bodies touch them.
RING_BYTES = 8 * 2**20

#: Bodies smaller than this cross inline, bytes.
INLINE_BELOW = 8 * 2**10


class RingWriter:
    """The worker's side: the ring passed as descriptor ``fd``, mapped read-write (the
    descriptor is closed once mapped).

    Raises:
        OSError: ``fd`` cannot be mapped.
    """

    def __init__(self, fd: int) -> None:
        try:
            self.size = os.fstat(fd).st_size
            self._map = mmap.mmap(fd, self.size)
        finally:
            os.close(fd)
        self._head = 0  # where the next body may start
        self._tail = 0  # the primary has read everything before this

    def holds(self, length: int) -> bool:
        """Whether a body of ``length`` bytes crosses in the ring (once there is room), not
        inline."""
        return INLINE_BELOW <= length <= self.size

    def put(self, body: bytes) -> tuple[int, int] | None:
        """Write ``body`` into the ring: its ``(position, length)``, or ``None`` when it is
        not to go there (:meth:`holds`) or there is no room until the primary reads further."""
        length = len(body)
        if not self.holds(length):
            return None
        start = self._head
        offset = start % self.size
        if offset + length > self.size:  # it would run off the end: start over at 0
            start += self.size - offset
            offset = 0
        # Read up to its head, the ring has room for any body it holds, wherever the head is:
        # a body the worker holds back for room gets it once the primary has read the rest.
        if self._tail < self._head and start + length - self._tail > self.size:
            return None  # it would overwrite a body the primary has not read yet
        self._map[offset : offset + length] = body
        self._head = start + length
        return start, length

    def taken(self, position: int) -> None:
        """The primary has read every body before ``position``: their room is free."""
        self._tail = max(self._tail, position)

    def close(self) -> None:
        """Unmap the ring."""
        self._map.close()


class RingReader:
    """The primary's side: a new memfd of ``size`` bytes, mapped read-only here; :attr:`fd`
    goes to the worker (``pass_fds``), then :meth:`sent` closes it here.

    Raises:
        OSError: the memfd cannot be made or mapped (e.g. no memfd support).
    """

    def __init__(self, size: int = RING_BYTES) -> None:
        self.size = size
        self.fd: int | None = os.memfd_create("gre-bodies", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, size)
            self._map = mmap.mmap(self.fd, size, prot=mmap.PROT_READ)
        except OSError:
            os.close(self.fd)
            raise
        #: How far bodies have been read (the position after the last one taken).
        self.position = 0

    def sent(self) -> None:
        """The worker has its descriptor: close this process's (the mapping stays)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def take(self, position: int, length: int) -> bytes:
        """A copy of the body the worker put at ``position``, ``length`` bytes (bodies are
        taken in the order they were put)."""
        offset = position % self.size
        body = self._map[offset : offset + length]
        self.position = position + length
        return body

    def close(self) -> None:
        """Unmap the ring (and close the descriptor, if not yet :meth:`sent`)."""
        self.sent()
        self._map.close()
