"""Admission by expected wait: refuse a request now (503) rather than accept it and answer 504.

A full queue of ``max_queue_size`` takes ``max_queue_size`` / throughput to drain; on a CPU at
30 images/s, 256 queued requests wait 8.5 s, so under overload nearly every accepted request
would wait out its deadline. :class:`WaitEstimate` learns the replicas' recent speed from
the batches they finish and predicts how long a new request would take; the scheduler refuses
it when that exceeds its deadline, so those it accepts finish in time.
"""

from __future__ import annotations

import math

#: Weight of the newest batch in the moving averages: about the last 10 batches count.
SMOOTHING = 0.2


class WaitEstimate:
    """Moving averages of batch duration (s) and of its time per image (s/image), from the
    batches replicas finish; :meth:`seconds` turns them into the expected time, s, until a
    request joining the queue now is answered."""

    def __init__(self) -> None:
        self.batch_s: float | None = None
        self.image_s: float | None = None

    def observe(self, batch_size: int, duration_s: float) -> None:
        """Record a finished batch of ``batch_size`` images that took ``duration_s`` (s)."""
        if batch_size < 1 or not math.isfinite(duration_s) or duration_s < 0:
            return
        per_image = duration_s / batch_size
        if self.batch_s is None or self.image_s is None:
            self.batch_s, self.image_s = duration_s, per_image
            return
        self.batch_s += SMOOTHING * (duration_s - self.batch_s)
        self.image_s += SMOOTHING * (per_image - self.image_s)

    def seconds(self, queued: int, replicas: int, max_batch_size: int) -> float:
        """Expected time (s) until a request joining ``queued`` waiting ones is answered by
        ``replicas`` replicas taking up to ``max_batch_size`` at once: what runs now finishes
        (one batch), then the queue ahead goes at the recent rate per image, then the
        request's own batch, which is answered only when its last image is done. 0 before
        any batch was observed (nothing known, nothing refused)."""
        if self.batch_s is None or self.image_s is None:
            return 0.0
        own_batch = min(max_batch_size, queued + 1)
        return self.batch_s + (queued + own_batch) * self.image_s / max(replicas, 1)
