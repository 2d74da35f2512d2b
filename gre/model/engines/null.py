"""The ``null`` engine, for benchmarking only: fixed probabilities, no forward pass.

Like GRE's empty-kernel benchmark, it measures what the service itself costs (HTTP, queueing,
batching, decode and preprocessing) with the net taken out.
"""

from __future__ import annotations

import numpy as np

from gre.messages import Device
from gre.model.engines import Batch, Output


class NullEngine:
    """Returns the same ``(N, K)`` probabilities (class i gets weight K - i) for any input."""

    name = "null"

    def __init__(self, num_classes: int, device: Device) -> None:
        weights = np.arange(num_classes, 0, -1, dtype=np.float32)
        self._row = weights / weights.sum()
        self.device = str(device)

    def forward(self, batch: Batch) -> Output:
        """``(N, C, H, W) float32`` -> ``(N, K) float32``, the fixed row repeated."""
        return np.tile(self._row, (batch.shape[0], 1))
