"""The image arena: one shared-memory buffer per replica through which a batch's encoded images
cross to the replica process, instead of inside the batch's pickle.

A batch of 32 photos is about 4.5 MB. Pickled on the socket it was copied six times on its way
from the scheduler to the decoders (pickle, framing, the socket's write and read, reassembly,
unpickle): 8 % of the service's CPU with cat.jpg under load (py-spy). Through the arena it is
copied twice: into it by the front end, out of it by the replica.

The front end creates a memfd (Linux's anonymous shared memory) of ``batching.max_batch_bytes``
(:data:`ARENA_BYTES` by default), maps it and passes its descriptor to the replica at spawn. A
replica has one batch at a time (:meth:`gre.replicas.replica.Replica.run` awaits the answer
before it sends the next), so each batch is written from offset 0 over the last. A batch larger
than the arena goes inline, as before; the scheduler makes none (its batches stop at
``max_batch_bytes``) but of one image that alone is larger. There is no name in /dev/shm to
clean up: the memory goes when both processes have closed it, a killed replica included.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Sequence

from gre.messages import SharedImages

#: The arena's size, bytes: 32 MiB holds a batch of 32 images of 1 MiB each. Pages are
#: allocated as batches touch them, so a replica of small images holds little of it.
ARENA_BYTES = 32 * 2**20


class ImageArena:
    """The front end's side: a memfd of ``size`` bytes, mapped read-write; :attr:`fd` goes to
    the replica (``pass_fds``).

    Raises:
        OSError: the memfd cannot be made or mapped (e.g. no memfd support).
    """

    def __init__(self, size: int = ARENA_BYTES) -> None:
        self.size = size
        self.fd = os.memfd_create("gre-images", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, size)
            self._map = mmap.mmap(self.fd, size)
        except OSError:
            os.close(self.fd)
            raise

    def put(self, images: Sequence[bytes]) -> SharedImages | None:
        """Write ``images`` from offset 0; their ``(offset, length)`` spans, or ``None`` when
        together they do not fit (send them inline)."""
        if sum(len(image) for image in images) > self.size:
            return None
        spans = []
        offset = 0
        for image in images:
            end = offset + len(image)
            self._map[offset:end] = image
            spans.append((offset, len(image)))
            offset = end
        return SharedImages(tuple(spans))

    def close(self) -> None:
        """Unmap and close the front end's descriptor (the replica keeps its own mapping)."""
        self._map.close()
        os.close(self.fd)


class ArenaReader:
    """The replica's side: the arena passed as descriptor ``fd``, mapped read-only (the
    descriptor is closed once mapped)."""

    def __init__(self, fd: int) -> None:
        try:
            self._map = mmap.mmap(fd, os.fstat(fd).st_size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)

    def images(self, shared: SharedImages) -> tuple[bytes, ...]:
        """The batch's encoded images, each copied out of the arena (the decoders take
        ``bytes``, and the next batch overwrites the arena)."""
        return tuple(self._map[offset : offset + length] for offset, length in shared.spans)
