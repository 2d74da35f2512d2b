"""Engines: a Caffe net loaded for one device, run on ``(N, C, H, W) float32`` batches.

Every engine implements :class:`Engine`. ``load_engine`` picks one by name; ``"auto"`` is the
torch engine on a GPU and opencv on the CPU (:mod:`gre.model.engines.choice` says why).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from gre.messages import Device, Outcome
from gre.model.preprocess import Normalization, Pixels, Preprocessor

Batch = npt.NDArray[np.float32]
Output = npt.NDArray[np.float32]
#: Named blobs of a batch: blob name -> ``(N, D) float32``, each image's blob flattened in
#: C, H, W order (pycaffe's ``net.blobs[name].data[i].ravel()``).
Features = dict[str, npt.NDArray[np.float32]]
#: Per blob, one image's shape: pycaffe's ``net.blobs[name].data.shape[1:]``.
BlobShapes = dict[str, tuple[int, ...]]


class EngineError(RuntimeError):
    """The engine cannot load the model or run it on the requested device."""


class Engine(Protocol):
    """A Caffe net ready to run on one device.

    Attributes:
        name: ``"opencv"``, ``"caffe"``, ``"torch"`` or ``"null"``.
        device: the device it actually runs on, e.g. ``"cpu"`` or ``"gpu:0"``.
    """

    name: str
    device: str

    def forward(self, batch: Batch) -> Output:
        """Run ``(N, C, H, W) float32`` through the net; return the output blob as ``(N, K)``
        float32 (trailing dimensions flattened). The net is reshaped to ``N``; no padding.
        """
        ...

    def blob_shapes(self) -> BlobShapes:
        """Every blob the net has (its input included) and one image's shape of it, as
        pycaffe's ``net.blobs``; empty for an engine without a net (``null``)."""
        ...

    def forward_blobs(self, batch: Batch, blobs: Collection[str]) -> tuple[Output, Features]:
        """:meth:`forward`, and the named blobs' values after it, each ``(N, D) float32``: an
        in-place layer's top holds its last writer's value, as ``net.blobs[name].data``
        after ``caffe.Net.forward``.

        Raises:
            EngineError: a name that is not a blob of the net, or the forward failed.
        """
        ...


@runtime_checkable
class TakesPixels(Protocol):
    """An engine that takes crops before the arithmetic and does it on its own device: the
    torch engine ships ``(N, C, H, W) uint8`` to the GPU (a quarter of float32's bytes, and no
    float work on the replica's CPU). The classifier uses it for batches that ask for no
    blobs."""

    def forward_pixels(self, pixels: Pixels, normalization: Normalization) -> Output:
        """``(N, C, H, W)`` crops (uint8, or float32 after caffe_resize) -> the output blob
        ``(N, K) float32``, exactly :meth:`Engine.forward` of ``normalization.apply(pixels)``
        (the same float32 operations in the same order).

        Raises:
            EngineError: as :meth:`Engine.forward`.
        """
        ...


@dataclass(frozen=True)
class DeviceCrops:
    """``(M, C, H, W) uint8`` crops already on an engine's device, in the net's channel order:
    ``tensor`` is a ``torch.Tensor``, opaque here so that the classifier needs no torch."""

    tensor: Any

    def __len__(self) -> int:
        return int(self.tensor.shape[0])


#: The classifier's host pipeline, for what a device decoder leaves: encoded images ->
#: ``(M, C, H, W)`` uint8 crops of those that decoded and, per image, ``None`` or its error.
HostDecode = Callable[[Sequence[bytes]], tuple[Pixels, list[Outcome | None]]]


class CropDecoder(Protocol):
    """Decodes a batch of encoded images into crops on its engine's device."""

    def crops(
        self, images: Sequence[bytes], decode_on_host: HostDecode
    ) -> tuple[DeviceCrops, list[Outcome | None]]:
        """The crops of the images that decoded, in order, and per image ``None`` or the
        :class:`gre.messages.ItemError` that kept it out; what the device cannot decode goes
        through ``decode_on_host``."""
        ...


@runtime_checkable
class DecodesOnDevice(Protocol):
    """An engine that can decode JPEGs on its device (``preprocess.decode = "gpu"``): the
    torch engine, with torchvision's nvJPEG decode."""

    def device_decoder(self, preprocessor: Preprocessor) -> CropDecoder:
        """A decoder into this engine's device for ``preprocessor``'s net.

        Raises:
            EngineError: the decoder is not installed, or cannot do this preprocessing.
        """
        ...

    def forward_crops(self, crops: DeviceCrops, normalization: Normalization) -> Output:
        """As :meth:`TakesPixels.forward_pixels`, for crops already on the device."""
        ...


def unknown_blobs_error(blobs: Collection[str], known: Collection[str]) -> EngineError | None:
    """The error for names in ``blobs`` not among the net's blobs ``known`` (naming those),
    or ``None`` when all are its blobs."""
    unknown = [name for name in blobs if name not in known]
    if not unknown:
        return None
    valid = ", ".join(known) or "(none: this engine runs no net)"
    return EngineError(f"not a blob of this net: {', '.join(unknown)}; its blobs: {valid}")


def caffe_importable() -> bool:
    """``True`` when ``import caffe`` would find pycaffe (checked without importing it)."""
    return importlib.util.find_spec("caffe") is not None


def resolve_engine_name(name: str, gpu: bool = False) -> str:
    """Map ``"auto"`` to the engine for the replicas' devices (``gpu``: they include a GPU):
    ``"torch"`` on a GPU, ``"opencv"`` on the CPU; any other name is itself."""
    if name == "auto":
        from gre.model.engines.choice import auto_engine

        return auto_engine(gpu)
    return name


def load_engine(
    name: str,
    deploy: Path,
    weights: Path,
    device: Device,
    threads: int,
    output_blob: str | None,
    num_classes: int,
    precision: str = "fp32",
) -> Engine:
    """Load ``deploy`` + ``weights`` with the named engine on ``device``.

    Args:
        name: ``"auto"``, ``"caffe"``, ``"opencv"``, ``"torch"`` or ``"null"``.
        threads: compute threads for a CPU device (ignored on a GPU).
        output_blob: blob to read; ``None`` for the net's last output.
        num_classes: ``K``, used only by the ``null`` engine.
        precision: ``model.precision``; only the torch engine runs other than ``"fp32"``.

    Raises:
        EngineError: unknown engine, engine not installed, a precision the engine cannot run,
            or the model does not load.
    """
    name = resolve_engine_name(name)
    if precision != "fp32" and name != "torch":
        raise EngineError(
            f'model.precision = {precision!r} needs engine = "torch"; the {name} engine '
            "runs fp32 only"
        )
    if name == "opencv":
        from gre.model.engines.opencv import OpenCVEngine

        return OpenCVEngine(deploy, weights, device, threads, output_blob)
    if name == "caffe":
        if not caffe_importable():
            raise EngineError("engine 'caffe' needs pycaffe: run `make caffe` (see README)")
        from gre.model.engines.caffe import CaffeEngine

        return CaffeEngine(deploy, weights, device, threads, output_blob)
    if name == "torch":
        if importlib.util.find_spec("torch") is None:
            raise EngineError(
                "engine 'torch' needs PyTorch: `pip install torch` into gre's venv "
                "(a CPU build: --index-url https://download.pytorch.org/whl/cpu)"
            )
        from gre.model.engines.torch import TorchEngine

        return TorchEngine(deploy, weights, device, threads, output_blob, precision)
    if name == "null":
        from gre.model.engines.null import NullEngine

        return NullEngine(num_classes, device)
    raise EngineError(f"unknown engine {name!r}")


def engine_has_gpu(name: str) -> bool:
    """Whether engine ``name`` (resolved) can run on a GPU in this installation."""
    if name == "opencv":
        from gre.model.engines.opencv import opencv_has_cuda

        return opencv_has_cuda()
    if name == "caffe":
        from gre.model.engines.caffe import caffe_has_cuda

        return caffe_has_cuda()
    if name == "torch":
        from gre.model.engines.choice import torch_build

        build = torch_build()  # read, not imported: this runs in the front end
        return build is not None and build.cuda is not None
    return False
