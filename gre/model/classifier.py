"""Encoded images in, top-k classes out: decode and preprocess in threads, one forward.

This is what a replica process runs for each batch, and what ``gre classify`` and the
benchmarks run in-process, so "the engine called directly" and "the engine behind HTTP" are
the same code.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import cv2
import numpy as np
import numpy.typing as npt

from gre.messages import BatchResult, ItemError, Outcome, Prediction
from gre.model.engines import (
    BlobShapes,
    CropDecoder,
    DecodesOnDevice,
    DeviceCrops,
    Engine,
    EngineError,
    Output,
    TakesPixels,
    unknown_blobs_error,
)
from gre.model.imaging import ImageError, decode_bgr
from gre.model.preprocess import Pixels, Preprocessor

log = logging.getLogger("gre.model.classifier")


def softmax(logits: Output) -> Output:
    """Row-wise softmax of ``(N, K)``, computed in float64 for stability, as float32."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    probabilities: Output = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
    return probabilities


def top_k(row: npt.NDArray[np.float32], k: int) -> Prediction:
    """The ``k`` largest of a ``(K,)`` row, largest first; ties keep the lower index first."""
    return top_k_rows(row[np.newaxis], [k])[0]


def top_k_rows(rows: npt.NDArray[np.float32], ks: Sequence[int]) -> list[Prediction]:
    """:func:`top_k` of each row of ``(N, K)`` with its own ``ks[i]``: one pass over the
    batch and one conversion to Python numbers, not one per image.

    The order is a stable descending sort's (ties keep the lower index first; NaN last), as
    ``np.argsort(-row, kind="stable")``. Sorting all K classes to keep a few cost 57 us per
    image for 1000 classes; a partition keeps the ``max(ks)`` largest first, and only those are
    sorted (10 us). When a tie straddles the partition's edge (or a NaN is among the largest),
    which of the tied classes the partition kept is arbitrary: those batches take the full
    stable sort, so the answer never depends on the path.
    """
    if not len(rows):
        return []
    widest = max(ks)
    order = _top_order(-rows, widest)
    values = np.take_along_axis(rows, order, axis=1)
    indices, confidences = order.tolist(), values.tolist()
    return [Prediction(tuple(indices[i][:k]), tuple(confidences[i][:k])) for i, k in enumerate(ks)]


#: A partition pays when it keeps less than this fraction of the classes.
_PARTITION_BELOW = 0.25


def _top_order(negated: npt.NDArray[np.float32], widest: int) -> npt.NDArray[np.intp]:
    """``(N, widest)`` column indices of each row's ``widest`` smallest, in stable order."""
    if 0 < widest < negated.shape[1] * _PARTITION_BELOW:  # k = 0 (features only): no classes
        kept = np.argpartition(negated, widest - 1, axis=1)[:, :widest]
        values = np.take_along_axis(negated, kept, axis=1)
        edge = values.max(axis=1, keepdims=True)  # NaN when a NaN was kept: no row passes
        # Exactly ``widest`` at or under the edge: the partition kept every class a stable
        # sort would, and no tie with one it dropped.
        if ((negated <= edge).sum(axis=1) == widest).all():
            by_value_then_index = np.lexsort((kept, values), axis=1)
            return np.take_along_axis(kept, by_value_then_index, axis=1)
    return np.argsort(negated, axis=1, kind="stable")[:, :widest]


@contextlib.contextmanager
def _opencv_serial() -> Iterator[None]:
    """OpenCV's own worker threads off (``cv2.setNumThreads(1)``) while the decode threads
    work, then as before (the OpenCV engine's forward uses them): each decode thread is one
    core's worth already, and cv2.resize splitting a 256x256 squash over OpenCV's pool as
    well cost 72 us of CPU instead of 39 (measured with 2 cores)."""
    threads = cv2.getNumThreads()
    if threads <= 1:
        yield
        return
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)


class Classifier:
    """Engine + preprocessing for whole batches of encoded images.

    Args:
        engine: a loaded :class:`gre.model.engines.Engine`.
        preprocessor: image -> input blob for this net.
        apply_softmax: turn the output blob (logits) into probabilities.
        decode_threads: threads that decode and preprocess (cv2 releases the GIL); 0: one
            per core (``os.cpu_count()``), for a classifier alone in its process.
        decode: ``preprocess.decode``: ``"cpu"`` (OpenCV, in the decode threads) or ``"gpu"``
            (JPEGs batched into the engine's device, the rest on the decode threads; for
            classify batches: a batch that asks for blobs decodes on the CPU).

    Raises:
        EngineError: ``decode = "gpu"`` with an engine that cannot decode on its device, or
            without its decoder (torchvision).
    """

    def __init__(
        self,
        engine: Engine,
        preprocessor: Preprocessor,
        apply_softmax: bool,
        decode_threads: int,
        decode: str = "cpu",
    ) -> None:
        self.engine = engine
        self.preprocessor = preprocessor
        self.apply_softmax = apply_softmax
        self._device_decoder: CropDecoder | None = None
        if decode == "gpu":
            if not isinstance(engine, DecodesOnDevice):
                raise EngineError(
                    f'preprocess.decode = "gpu" needs engine = "torch"; the {engine.name} '
                    'engine decodes on the CPU (set decode = "cpu")'
                )
            self._device_decoder = engine.device_decoder(preprocessor)
        self._threads = decode_threads or os.cpu_count() or 1
        # The calling thread decodes too: the pool holds the other threads.
        self._pool = ThreadPoolExecutor(max(1, self._threads - 1), thread_name_prefix="gre-decode")
        self._blob_shapes: BlobShapes | None = None
        # A runtime-checkable Protocol's isinstance walks its members: once, not per batch.
        self._takes_pixels = isinstance(engine, TakesPixels)

    def close(self) -> None:
        """Stop the decode threads."""
        self._pool.shutdown(wait=True)

    def prepare(
        self, images: Sequence[bytes]
    ) -> tuple[npt.NDArray[np.float32], list[Outcome | None]]:
        """Decode and preprocess into one ``(M, C, H, W) float32`` batch, ``M <= len(images)``.

        Returns the batch of the images that decoded, and per image ``None`` (it is in the
        batch, in order) or the :class:`ItemError` that kept it out. Each decode thread
        writes its image's blob straight into the batch: no per-image float32 copies.
        """
        batch = np.empty((len(images), *self.preprocessor.input_shape), dtype=np.float32)
        normalization = self.preprocessor.normalization

        def one(i: int) -> ItemError | None:
            pixels = self._pixels_of(images[i])
            if isinstance(pixels, ItemError):
                return pixels
            normalization.apply(pixels, out=batch[i])
            return None

        return self._fill(batch, self._each(len(images), one))

    @property
    def decodes_on_device(self) -> bool:
        """Whether classify batches decode on the engine's device (``decode = "gpu"``)."""
        return self._device_decoder is not None

    def prepare_crops(self, images: Sequence[bytes]) -> tuple[DeviceCrops, list[Outcome | None]]:
        """As :meth:`prepare_pixels`, the JPEGs decoded on the engine's device: the crops stay
        there (``decode = "gpu"`` only).

        Raises:
            RuntimeError: this classifier decodes on the CPU.
        """
        if self._device_decoder is None:
            raise RuntimeError('prepare_crops needs preprocess.decode = "gpu"')
        return self._device_decoder.crops(images, self.prepare_pixels)

    def prepare_pixels(self, images: Sequence[bytes]) -> tuple[Pixels, list[Outcome | None]]:
        """As :meth:`prepare`, but stops before the arithmetic: ``(M, C, H, W)`` crops of
        the preprocessor's ``pixel_dtype`` (uint8 for cv2.resize: a quarter of float32's
        bytes), for an engine that normalises on its device
        (:class:`gre.model.engines.TakesPixels`)."""
        pre = self.preprocessor
        pixels = np.empty((len(images), *pre.input_shape), dtype=pre.pixel_dtype)

        def one(i: int) -> ItemError | None:
            crop = self._pixels_of(images[i], pixels[i])
            return crop if isinstance(crop, ItemError) else None

        return self._fill(pixels, self._each(len(images), one))

    def _each(self, count: int, one: Callable[[int], ItemError | None]) -> list[ItemError | None]:
        """``one(i)`` for every image ``i < count``, on the decode threads and this one: each
        takes the next image as it finishes one (big images do not hold up a fixed share),
        so a batch costs one hand-off per thread, not one future per image."""
        results: list[ItemError | None] = [None] * count
        tickets = itertools.count()  # next() is atomic under the GIL

        def work() -> None:
            while (i := next(tickets)) < count:
                results[i] = one(i)

        with _opencv_serial():
            helpers = [self._pool.submit(work) for _ in range(min(self._threads, count) - 1)]
            work()
            for helper in helpers:
                helper.result()
        return results

    @staticmethod
    def _fill(
        batch: npt.NDArray[Any], errors: list[ItemError | None]
    ) -> tuple[npt.NDArray[Any], list[Outcome | None]]:
        """``batch`` without the rows of images that failed (a copy only when one did)."""
        kept = [i for i, error in enumerate(errors) if error is None]
        if len(kept) < len(errors):
            batch = batch[kept]
        return batch, list(errors)

    def _pixels_of(self, image: bytes, out: Pixels | None = None) -> Pixels | ItemError:
        try:
            return self.preprocessor.pixels(decode_bgr(image), out)
        except ImageError as exc:
            return ItemError(exc.code, str(exc))
        except Exception as exc:  # a decoder bug must cost this image, never its batch
            log.exception("decoding or preprocessing an image raised")
            return ItemError("bad_image", f"the image could not be decoded ({type(exc).__name__})")

    def probabilities(self, batch: npt.NDArray[np.float32]) -> Output:
        """Forward ``(N, C, H, W)`` -> ``(N, K) float32`` probabilities."""
        output: Output = self.engine.forward(batch)
        return softmax(output) if self.apply_softmax else output

    def blob_shapes(self) -> BlobShapes:
        """The engine's blobs and one image's shape of each (asked of the engine once)."""
        if self._blob_shapes is None:
            self._blob_shapes = self.engine.blob_shapes()
        return self._blob_shapes

    def classify(
        self,
        images: Sequence[bytes],
        top_ks: Sequence[int],
        blobs: Sequence[Sequence[str]] = (),
    ) -> BatchResult:
        """Classify a batch: per image its top ``top_ks[i]`` classes (0: none) with the blobs
        ``blobs[i]`` names (``blobs`` empty: none), or an :class:`ItemError` (``bad_blob``
        for a name the net lacks: that image only). One forward serves both.

        Raises:
            gre.model.engines.EngineError: the forward pass failed (the whole batch is lost).
        """
        start = time.perf_counter()
        wanted = [tuple(names) for names in blobs] or [()] * len(images)
        refused = [self._blob_error(names) for names in wanted]
        todo = [i for i, error in enumerate(refused) if error is None]
        # Features need the float32 input blob on the host (it is a blob too); a classify
        # batch goes to an engine that normalises on its device as uint8 crops.
        asks_blobs = any(wanted[i] for i in todo)
        on_device = not asks_blobs and self._takes_pixels
        chosen = [images[i] for i in todo]
        crops: DeviceCrops | None = None
        if on_device and self._device_decoder is not None:
            crops, prepared_outcomes = self.prepare_crops(chosen)
            batch: Any = crops
        else:
            batch, prepared_outcomes = (
                self.prepare_pixels(chosen) if on_device else self.prepare(chosen)
            )
        outcomes: list[Outcome | None] = list(refused)
        for i, outcome in zip(todo, prepared_outcomes, strict=True):
            outcomes[i] = outcome
        names = list(dict.fromkeys(n for i in todo if outcomes[i] is None for n in wanted[i]))
        prepared = time.perf_counter()
        features: dict[str, Output] = {}
        if not len(batch):
            probabilities = np.empty((0, 0), np.float32)
        elif names:
            output, features = self.engine.forward_blobs(batch, names)
            probabilities = softmax(output) if self.apply_softmax else output
        elif crops is not None:
            device_engine = cast(DecodesOnDevice, self.engine)  # it made the decoder
            output = device_engine.forward_crops(crops, self.preprocessor.normalization)
            probabilities = softmax(output) if self.apply_softmax else output
        elif on_device:
            pixel_engine = cast(TakesPixels, self.engine)  # self._takes_pixels
            output = pixel_engine.forward_pixels(batch, self.preprocessor.normalization)
            probabilities = softmax(output) if self.apply_softmax else output
        else:
            probabilities = self.probabilities(batch)
        done = time.perf_counter()
        filled: list[Outcome] = []
        row = 0
        ks = [k for outcome, k in zip(outcomes, top_ks, strict=True) if outcome is None]
        predictions = top_k_rows(probabilities, ks) if len(batch) else []
        for outcome, asked in zip(outcomes, wanted, strict=True):
            if outcome is not None:
                filled.append(outcome)
                continue
            prediction = predictions[row]
            if asked:
                mine = {name: features[name][row] for name in asked}
                prediction = Prediction(prediction.indices, prediction.confidences, mine)
            filled.append(prediction)
            row += 1
        return BatchResult(filled, (prepared - start) * 1e3, (done - prepared) * 1e3)

    def _blob_error(self, names: tuple[str, ...]) -> ItemError | None:
        error = unknown_blobs_error(names, self.blob_shapes()) if names else None
        return None if error is None else ItemError("bad_blob", str(error))
