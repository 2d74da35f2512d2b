"""The ``null`` engine, for benchmarking only: fixed probabilities, no forward pass.

Like GRE's empty-kernel benchmark, it measures what the service itself costs (HTTP, queueing,
batching, decode, resize and crop) with the net taken out. It takes uint8 crops as the torch
engine on a GPU does (:class:`gre.model.engines.TakesPixels`), so the mean and scales, which
that engine runs on the device, are not counted either.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from gre.messages import Device
from gre.model.engines import Batch, BlobShapes, Features, Output, unknown_blobs_error
from gre.model.preprocess import Normalization, Pixels


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

    def forward_pixels(self, pixels: Pixels, normalization: Normalization) -> Output:
        """:meth:`forward` for crops before the arithmetic (``normalization`` unused)."""
        return np.tile(self._row, (pixels.shape[0], 1))

    def blob_shapes(self) -> BlobShapes:
        """None: there is no net, so no blob can be asked for."""
        return {}

    def forward_blobs(self, batch: Batch, blobs: Collection[str]) -> tuple[Output, Features]:
        """:meth:`forward` when ``blobs`` is empty.

        Raises:
            EngineError: any blob named (the null engine has none).
        """
        error = unknown_blobs_error(blobs, {})
        if error is not None:
            raise error
        return self.forward(batch), {}
