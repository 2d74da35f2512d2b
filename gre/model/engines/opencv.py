"""The ``opencv`` engine: ``cv2.dnn.readNetFromCaffe`` (opencv-python-headless >= 4.8, < 5)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from gre.messages import Device
from gre.model.engines import Batch, EngineError, Output


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
        self._deploy, self._weights = deploy, weights
        self._gpu = device.is_gpu and opencv_has_cuda()
        # "gpu:0": the replica sees only its own GPU (CUDA_VISIBLE_DEVICES).
        self.device = "gpu:0" if self._gpu else "cpu"
        self._output = output_blob or ""
        #: One net per batch size it runs, all powers of two (see :meth:`forward`).
        self._nets = {1: self._load()}
        self._check_weights(weights)

    def _load(self) -> cv2.dnn.Net:
        try:
            net = cv2.dnn.readNetFromCaffe(str(self._deploy), str(self._weights))
        except cv2.error as exc:
            raise EngineError(
                f"OpenCV cannot load {self._deploy} + {self._weights}: {exc}"
            ) from exc
        if self._gpu:
            net.setPreferableBackend(cv2.dnn.DNN_BACKEND_CUDA)
            net.setPreferableTarget(cv2.dnn.DNN_TARGET_CUDA)
        else:
            net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
            net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        return net

    def _check_weights(self, weights: Path) -> None:
        # OpenCV, like Caffe, copies weights by layer name and leaves a layer without any when
        # the caffemodel lacks it (a corrupt file, or another net's): refuse that at load.
        net = self._nets[1]
        for name in net.getLayerNames():
            layer = net.getLayer(name)
            if layer.type in _WEIGHTED_LAYERS and not layer.blobs:
                raise EngineError(
                    f"{weights} has no weights for layer {name!r} ({layer.type}): "
                    "a corrupt caffemodel, or one for another net"
                )

    def forward(self, batch: Batch) -> Output:
        """``(N, C, H, W) float32`` -> output blob ``(N, K) float32``.

        A cv2.dnn net re-plans every layer whenever its input's batch size changes (about
        30 ms for open_nsfw on a CPU, as long as a forward), and a dynamic batcher's sizes
        change all the time. So the batch runs as chunks of power-of-two sizes, largest first
        (13 = 8 + 4 + 1), each on a net of its own that keeps its shape: no reshape and no
        padding, at the cost of one copy of the weights per size used.
        """
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        outputs = []
        start = 0
        for size in power_of_two_chunks(batch.shape[0]):
            if size not in self._nets:  # first batch of this size (warm-up, normally)
                self._nets[size] = self._load()
            net = self._nets[size]
            net.setInput(batch[start : start + size])
            try:
                out = net.forward(self._output)
            except cv2.error as exc:
                raise EngineError(f"OpenCV forward failed: {exc}") from exc
            outputs.append(np.asarray(out, dtype=np.float32).reshape(size, -1))
            start += size
        if not outputs:
            return np.empty((0, 0), dtype=np.float32)
        return np.concatenate(outputs)


def power_of_two_chunks(n: int) -> list[int]:
    """``n`` as distinct powers of two, largest first: 13 -> ``[8, 4, 1]``, 0 -> ``[]``."""
    return [1 << bit for bit in range(n.bit_length() - 1, -1, -1) if n >> bit & 1]
