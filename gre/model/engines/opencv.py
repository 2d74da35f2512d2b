"""The ``opencv`` engine: ``cv2.dnn.readNetFromCaffe`` (opencv-python-headless >= 4.8, < 5)."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import cv2
import numpy as np

from gre.messages import Device
from gre.model.blobs import blob_writers
from gre.model.engines import (
    Batch,
    BlobShapes,
    EngineError,
    Features,
    Output,
    unknown_blobs_error,
)
from gre.model.prototxt import PrototxtError, parse, read_net_spec


def opencv_has_cuda() -> bool:
    """``True`` when this OpenCV build has CUDA and sees a device (PyPI wheels do not)."""
    try:
        return bool(cv2.cuda.getCudaEnabledDeviceCount() > 0)
    except cv2.error:
        return False


def opencv_reads_caffe() -> bool:
    """Whether this OpenCV has the Caffe importer (``cv2.dnn.readNetFromCaffe``: 4.x; OpenCV 5
    dropped it, and gre asks for opencv-python-headless < 5)."""
    return hasattr(cv2, "dnn") and hasattr(cv2.dnn, "readNetFromCaffe")


#: Layer types that cannot run without learned blobs.
_WEIGHTED_LAYERS = {"Convolution", "InnerProduct", "Deconvolution", "BatchNorm", "Scale"}


class OpenCVEngine:
    """A Caffe net in OpenCV's DNN module.

    Uses the CUDA backend and target when the replica is on a GPU and OpenCV was built with
    CUDA; the CPU otherwise (then ``device`` says ``"cpu"``).

    Raises:
        EngineError: OpenCV cannot read the deploy prototxt or caffemodel, or has no Caffe
            importer at all (OpenCV 5).
    """

    name = "opencv"

    def __init__(
        self, deploy: Path, weights: Path, device: Device, threads: int, output_blob: str | None
    ) -> None:
        if not opencv_reads_caffe():
            raise EngineError(
                f"OpenCV {cv2.__version__} has no Caffe importer (cv2.dnn.readNetFromCaffe, "
                "gone in OpenCV 5): install opencv-python-headless >= 4.8, < 5, or set "
                'engine = "torch"'
            )
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
        try:
            writers = blob_writers(parse(deploy.read_text(encoding="utf-8")))
            self._input_shape = read_net_spec(deploy).input_shape
        except (OSError, PrototxtError) as exc:
            raise EngineError(f"cannot read {deploy}: {exc}") from exc
        #: Blob -> the layer whose output it is (its last writer; "" for a net input).
        self._writers = writers
        #: Per power-of-two size, a net that keeps every layer's output (see forward_blobs).
        self._feature_nets: dict[int, cv2.dnn.Net] = {}
        self._shapes: BlobShapes | None = None

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

    def blob_shapes(self) -> BlobShapes:
        """Every blob of the prototxt's TEST net and one image's shape of it, measured once by
        a forward of a zero image through a net of its own (then dropped)."""
        if self._shapes is None:
            zero = np.zeros((2, *self._input_shape), dtype=np.float32)  # N = 1: see forward_blobs
            by_layer = self._all_outputs(self._load(), zero)
            self._shapes = {
                blob: tuple(int(d) for d in (by_layer[layer] if layer else zero).shape[1:])
                for blob, layer in self._writers.items()
            }
        return dict(self._shapes)

    def forward_blobs(self, batch: Batch, blobs: Collection[str]) -> tuple[Output, Features]:
        """:meth:`forward` and the named blobs, each ``(N, D) float32``, a blob being its last
        writer layer's output (OpenCV names outputs by layer; Caffe's in-place layers make
        the blob the last writer's top).

        These batches run on nets of their own that keep every layer's output, so that
        asking for other blobs never re-plans a net (OpenCV re-plans when the outputs asked
        for change) and never unfuses the nets that serve classification: one more copy of
        the weights per power-of-two size used, loaded on the first such batch of that size.

        Raises:
            EngineError: a name that is not a blob of the net, or the forward failed.
        """
        error = unknown_blobs_error(blobs, self._writers)
        if error is not None:
            raise error
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        outputs: list[Output] = []
        pieces: dict[str, list[Output]] = {name: [] for name in blobs}
        start = 0
        for size in power_of_two_chunks(batch.shape[0]):
            chunk = batch[start : start + size]
            # At N = 1 OpenCV writes a Concat's inputs straight into its output (the inputs
            # are then contiguous along channels) and the inputs' own outputs are left stale:
            # so a lone image runs as a pair with itself.
            padded = np.concatenate([chunk, chunk]) if size == 1 else chunk
            net = self._feature_nets.get(len(padded))
            if net is None:
                net = self._feature_nets[len(padded)] = self._load()
            by_layer = self._all_outputs(net, padded)
            outputs.append(by_layer[_OUTPUT][:size].reshape(size, -1))
            for name in blobs:
                layer = self._writers[name]
                value = by_layer[layer][:size] if layer else chunk
                pieces[name].append(value.reshape(size, -1))
            start += size
        if not outputs:
            empty = np.empty((0, 0), dtype=np.float32)
            return empty, {name: empty for name in blobs}
        return np.concatenate(outputs), {name: np.concatenate(p) for name, p in pieces.items()}

    def _all_outputs(self, net: cv2.dnn.Net, chunk: Batch) -> dict[str, Output]:
        """Forward ``chunk`` on ``net`` and return every writer layer's output by layer name,
        and the output blob under :data:`_OUTPUT` (copies: the net reuses its memory)."""
        # In net order, each once: OpenCV's outputs come back in the order asked.
        layers = list(dict.fromkeys(layer for layer in self._writers.values() if layer))
        last = net.getLayerNames()[-1]
        output = (self._writers.get(self._output) or self._output) if self._output else last
        asked = layers if output in layers else [*layers, output]
        net.setInput(chunk)
        try:
            values = net.forward(asked)
        except cv2.error as exc:
            raise EngineError(f"OpenCV forward failed: {exc}") from exc
        by_layer = {
            n: np.array(v, dtype=np.float32, copy=True) for n, v in zip(asked, values, strict=True)
        }
        by_layer[_OUTPUT] = by_layer[output]
        return by_layer


#: :meth:`OpenCVEngine._all_outputs`' key for the output blob (not a layer name: has a space).
_OUTPUT = "output blob"


def power_of_two_chunks(n: int) -> list[int]:
    """``n`` as distinct powers of two, largest first: 13 -> ``[8, 4, 1]``, 0 -> ``[]``."""
    return [1 << bit for bit in range(n.bit_length() - 1, -1, -1) if n >> bit & 1]
