"""The ``opencv`` engine: ``cv2.dnn.readNetFromCaffe`` (opencv-python-headless >= 4.8, < 5)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from gre.device import Device
from gre.engines import Batch, EngineError, Output


def opencv_has_cuda() -> bool:
    """``True`` when this OpenCV build has CUDA and sees a device (PyPI wheels do not)."""
    try:
        return bool(cv2.cuda.getCudaEnabledDeviceCount() > 0)
    except cv2.error:
        return False


#: Layer types that cannot run without learned blobs.
_WEIGHTED_LAYERS = {"Convolution", "InnerProduct", "Deconvolution", "BatchNorm", "Scale"}


class OpenCVEngine:
    """A Caffe net in OpenCV's DNN module.

    Uses the CUDA backend and target when the replica is on a GPU and OpenCV was built with
    CUDA; the CPU otherwise (then ``device`` says ``"cpu"``).

    Raises:
        EngineError: OpenCV cannot read the deploy prototxt or caffemodel.
    """

    name = "opencv"

    def __init__(
        self, deploy: Path, weights: Path, device: Device, threads: int, output_blob: str | None
    ) -> None:
        if threads > 0:
            cv2.setNumThreads(threads)
        try:
            self._net = cv2.dnn.readNetFromCaffe(str(deploy), str(weights))
        except cv2.error as exc:
            raise EngineError(f"OpenCV cannot load {deploy} + {weights}: {exc}") from exc
        self._check_weights(weights)
        if device.is_gpu and opencv_has_cuda():
            self._net.setPreferableBackend(cv2.dnn.DNN_BACKEND_CUDA)
            self._net.setPreferableTarget(cv2.dnn.DNN_TARGET_CUDA)
            self.device = "gpu:0"  # the replica sees only its own GPU (CUDA_VISIBLE_DEVICES)
        else:
            self._net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
            self._net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
            self.device = "cpu"
        self._output = output_blob or ""

    def _check_weights(self, weights: Path) -> None:
        # OpenCV, like Caffe, copies weights by layer name and leaves a layer without any when
        # the caffemodel lacks it (a corrupt file, or another net's): refuse that at load.
        for name in self._net.getLayerNames():
            layer = self._net.getLayer(name)
            if layer.type in _WEIGHTED_LAYERS and not layer.blobs:
                raise EngineError(
                    f"{weights} has no weights for layer {name!r} ({layer.type}): "
                    "a corrupt caffemodel, or one for another net"
                )

    def forward(self, batch: Batch) -> Output:
        """``(N, C, H, W) float32`` -> output blob ``(N, K) float32``."""
        self._net.setInput(np.ascontiguousarray(batch, dtype=np.float32))
        try:
            out = self._net.forward(self._output)
        except cv2.error as exc:
            raise EngineError(f"OpenCV forward failed: {exc}") from exc
        return np.asarray(out, dtype=np.float32).reshape(batch.shape[0], -1)
