"""What a request gets instead of its answer, and the one vocabulary for replica trouble.

A request's future resolves with its answer or one of these exceptions; the HTTP layer maps
each to an error code of its catalogue (``gre.http.errors``). Replica trouble is always a
:class:`ReplicaError`, whose subclass says what happened: the replica could not start
(:class:`ReplicaStartError`), is gone or hung (:class:`ReplicaLost`: the scheduler stops
dispatching to it and retries its batch elsewhere), or failed one batch and lives on
(:class:`ReplicaBatchError`).
"""

from __future__ import annotations


class QueueFull(Exception):
    """``max_queue_size`` requests are waiting, or the expected wait exceeds the request's
    deadline (HTTP 503 ``queue_full``)."""


class DeadlineExceeded(Exception):
    """The request's deadline passed before it was answered (HTTP 504)."""


class ShuttingDown(Exception):
    """The service is draining and accepts no new requests (HTTP 503)."""


class ReplicaError(RuntimeError):
    """A replica failed; answered HTTP 503 ``replica_failed`` to the requests it affects."""


class ReplicaStartError(ReplicaError):
    """A replica could not load its net or warm up, or reported an unusable model."""


class ReplicaLost(ReplicaError):
    """The replica process is gone (killed, crashed, its connection broke) or did not answer a
    batch within ``replica_timeout_ms``; it must be replaced."""


class ReplicaBatchError(ReplicaError):
    """The replica's forward pass raised for one batch; the replica goes on serving."""
