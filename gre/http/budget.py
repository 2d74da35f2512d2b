"""The budget of request body bytes in flight, shared by every connection of one server
(``server.max_inflight_body_bytes``; README "Limits").

Without it the bodies being read could hold up to ``max_connections`` x ``max_body_bytes``
(16 GiB at the defaults): a client that uploads most of a large declared body and stalls makes
the front end hold it until ``body_timeout_s``. :mod:`gre.http.protocol` reserves a request's
bytes here (its ``Content-Length`` up front, a chunked body's chunks as they arrive) and
releases them when its answer is complete or its connection is lost.

Pure accounting: no I/O, no asyncio, no locks (the event loop's one thread is its only user).
"""

from __future__ import annotations

#: ``server.max_inflight_body_bytes``'s default, bytes (gre.config.ServerConfig's).
DEFAULT_CAPACITY_BYTES = 256 * 1024 * 1024


class BodyBudget:
    """How many body bytes all requests together may hold (:attr:`capacity`) and how many
    they hold now (:attr:`held`).

    Args:
        capacity_bytes: the most bytes held at once (at least 1).

    Raises:
        ValueError: ``capacity_bytes`` is below 1.
    """

    def __init__(self, capacity_bytes: int = DEFAULT_CAPACITY_BYTES) -> None:
        if capacity_bytes < 1:
            raise ValueError(f"a body budget needs at least 1 byte, got {capacity_bytes}")
        self._capacity = capacity_bytes
        self._held = 0

    def __repr__(self) -> str:
        return f"BodyBudget(held={self._held}, capacity={self._capacity})"

    @property
    def capacity(self) -> int:
        """The most bytes held at once."""
        return self._capacity

    @property
    def held(self) -> int:
        """Bytes reserved now (``gre_inflight_body_bytes``)."""
        return self._held

    @property
    def free(self) -> int:
        """Bytes that may still be reserved: :attr:`capacity` - :attr:`held`."""
        return self._capacity - self._held

    def fits(self, size: int) -> bool:
        """Whether ``size`` more bytes may be reserved now."""
        return size <= self.free

    def reserve(self, size: int) -> bool:
        """Hold ``size`` more bytes if they fit; whether they did (nothing is held if not).

        Raises:
            ValueError: ``size`` is negative.
        """
        if size < 0:
            raise ValueError(f"cannot reserve {size} bytes")
        if not self.fits(size):
            return False
        self._held += size
        return True

    def release(self, size: int) -> None:
        """Give back ``size`` bytes reserved earlier.

        Raises:
            ValueError: ``size`` is negative or more than is held (a bookkeeping bug: a
                release that does not match a reservation).
        """
        if not 0 <= size <= self._held:
            raise ValueError(f"cannot release {size} bytes: {self._held} are held")
        self._held -= size
