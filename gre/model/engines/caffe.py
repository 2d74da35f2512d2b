"""The ``caffe`` engine: the reference implementation, pycaffe.

gre builds a CPU pycaffe whose ``Net.forward`` releases the GIL (scripts/build-caffe.sh); a
user's own build (e.g. with CUDA) is used when it is importable (``GRE_CAFFE_PYTHONPATH``).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

from gre.messages import Device
from gre.model.engines import (
    Batch,
    BlobShapes,
    EngineError,
    Features,
    Output,
    unknown_blobs_error,
)


def caffe_has_cuda() -> bool:
    """``True`` when the importable pycaffe was built with CUDA.

    pycaffe has no API for this, and ``set_mode_gpu()`` on a CPU_ONLY build aborts the process;
    so look for the CUDA runtime among the libraries its extension module links.
    """
    spec = importlib.util.find_spec("caffe")
    if spec is None or not spec.submodule_search_locations:
        return False
    folder = Path(next(iter(spec.submodule_search_locations)))
    for library in folder.glob("_caffe*.so"):
        data = library.read_bytes()
        if b"libcudart.so" in data or (b"libcaffe" in data and _libcaffe_has_cuda(library)):
            return True
    return False


def _libcaffe_has_cuda(extension: Path) -> bool:
    # A CMake build links _caffe.so against libcaffe.so, which holds the CUDA dependency.
    for candidate in extension.parent.glob("../../lib*/libcaffe*.so*"):
        if b"libcudart.so" in candidate.read_bytes():
            return True
    return False


def _check_caffemodel(weights: Path) -> None:
    """Raise :class:`EngineError` unless ``weights`` parses as a NetParameter: Caffe's own
    reader aborts the whole process on a corrupt file, with only a glog line to say why."""
    from caffe.proto import caffe_pb2

    net = caffe_pb2.NetParameter()
    try:
        net.ParseFromString(weights.read_bytes())
    except Exception as exc:
        raise EngineError(f"{weights} is not a valid caffemodel: {exc}") from exc
    if not (net.layer or net.layers):
        raise EngineError(f"{weights} is not a valid caffemodel: it has no layers")


class CaffeEngine:
    """A ``caffe.Net(deploy, TEST, weights=...)`` reshaped to each batch.

    Raises:
        EngineError: pycaffe cannot load the model, or a GPU is asked of a CPU-only build.
    """

    name = "caffe"

    def __init__(
        self, deploy: Path, weights: Path, device: Device, threads: int, output_blob: str | None
    ) -> None:
        # Quiet glog's per-layer start-up lines unless the user asked for them.
        os.environ.setdefault("GLOG_minloglevel", "2")
        import caffe

        self._caffe: Any = caffe
        if device.is_gpu:
            if not caffe_has_cuda():
                raise EngineError(
                    "this pycaffe is CPU-only; set GRE_CAFFE_PYTHONPATH to a CUDA build"
                )
            caffe.set_mode_gpu()
            caffe.set_device(device.index)
            self.device = f"gpu:{device.index}"
        else:
            caffe.set_mode_cpu()
            self.device = "cpu"
        for path in (deploy, weights):
            if not path.is_file():  # Caffe would abort the process instead of raising
                raise EngineError(f"no such file: {path}")
        _check_caffemodel(weights)
        try:
            self._net: Any = caffe.Net(str(deploy), caffe.TEST, weights=str(weights))
        except Exception as exc:
            raise EngineError(f"pycaffe cannot load {deploy} + {weights}: {exc}") from exc
        self._input = self._net.inputs[0]
        self._output = output_blob or self._net.outputs[-1]
        if self._output not in self._net.blobs:
            raise EngineError(f"model.output_blob {self._output!r} is not a blob of this net")

    def forward(self, batch: Batch) -> Output:
        """``(N, C, H, W) float32`` -> output blob ``(N, K) float32`` (copied out of the net)."""
        self._run(batch)
        return self._copy(self._output, batch.shape[0])

    def blob_shapes(self) -> BlobShapes:
        """``net.blobs``' names and shapes without the batch dimension (the Split blobs Caffe
        inserts for a blob read by several layers included)."""
        return {
            name: tuple(int(d) for d in b.data.shape[1:]) for name, b in self._net.blobs.items()
        }

    def forward_blobs(self, batch: Batch, blobs: Collection[str]) -> tuple[Output, Features]:
        """:meth:`forward` and ``net.blobs[name].data`` of each of ``blobs``, copied out,
        ``(N, D) float32``.

        Raises:
            EngineError: a name that is not in ``net.blobs``.
        """
        error = unknown_blobs_error(blobs, self.blob_shapes())
        if error is not None:
            raise error
        self._run(batch)
        n = batch.shape[0]
        return self._copy(self._output, n), {name: self._copy(name, n) for name in blobs}

    def _run(self, batch: Batch) -> None:
        blob = self._net.blobs[self._input]
        if blob.data.shape != batch.shape:
            blob.reshape(*batch.shape)
            self._net.reshape()
        blob.data[...] = batch
        self._net.forward()

    def _copy(self, name: str, n: int) -> Output:
        """Blob ``name`` as ``(n, D) float32``, a copy (the net reuses its memory)."""
        out = self._net.blobs[name].data
        return np.array(out, dtype=np.float32, copy=True).reshape(n, -1)
