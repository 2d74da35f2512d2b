"""Encoded images in, top-k classes out: decode and preprocess in threads, one forward.

This is what a replica process runs for each batch, and what ``gre classify`` and the
benchmarks run in-process, so "the engine called directly" and "the engine behind HTTP" are
the same code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt

from gre.messages import BatchResult, ItemError, Outcome, Prediction
from gre.model.engines import Engine, Output
from gre.model.imaging import ImageError, decode_bgr
from gre.model.preprocess import Blob, Preprocessor

log = logging.getLogger("gre.model.classifier")


def softmax(logits: Output) -> Output:
    """Row-wise softmax of ``(N, K)``, computed in float64 for stability, as float32."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    probabilities: Output = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
    return probabilities


def top_k(row: npt.NDArray[np.float32], k: int) -> Prediction:
    """The ``k`` largest of a ``(K,)`` row, largest first; ties keep the lower index first."""
    order = np.argsort(-row, kind="stable")[:k]
    return Prediction(tuple(int(i) for i in order), tuple(float(row[i]) for i in order))


class Classifier:
    """Engine + preprocessing for whole batches of encoded images.

    Args:
        engine: a loaded :class:`gre.model.engines.Engine`.
        preprocessor: image -> input blob for this net.
        apply_softmax: turn the output blob (logits) into probabilities.
        decode_threads: threads that decode and preprocess (cv2 releases the GIL).
    """

    def __init__(
        self,
        engine: Engine,
        preprocessor: Preprocessor,
        apply_softmax: bool,
        decode_threads: int,
    ) -> None:
        self.engine = engine
        self.preprocessor = preprocessor
        self.apply_softmax = apply_softmax
        self._pool = ThreadPoolExecutor(decode_threads, thread_name_prefix="gre-decode")

    def close(self) -> None:
        """Stop the decode threads."""
        self._pool.shutdown(wait=True)

    def prepare(
        self, images: Sequence[bytes]
    ) -> tuple[npt.NDArray[np.float32], list[Outcome | None]]:
        """Decode and preprocess into one ``(M, C, H, W) float32`` batch, ``M <= len(images)``.

        Returns the batch of the images that decoded, and per image ``None`` (it is in the
        batch, in order) or the :class:`ItemError` that kept it out.
        """
        results: list[Blob | ItemError] = list(self._pool.map(self._prepare_one, images))
        blobs = [r for r in results if not isinstance(r, ItemError)]
        batch = np.empty((len(blobs), *self.preprocessor.input_shape), dtype=np.float32)
        for i, blob in enumerate(blobs):
            batch[i] = blob
        errors: list[Outcome | None] = [r if isinstance(r, ItemError) else None for r in results]
        return batch, errors

    def _prepare_one(self, image: bytes) -> Blob | ItemError:
        try:
            return self.preprocessor(decode_bgr(image))
        except ImageError as exc:
            return ItemError(exc.code, str(exc))
        except Exception as exc:  # a decoder bug must cost this image, never its batch
            log.exception("decoding or preprocessing an image raised")
            return ItemError("bad_image", f"the image could not be decoded ({type(exc).__name__})")

    def probabilities(self, batch: npt.NDArray[np.float32]) -> Output:
        """Forward ``(N, C, H, W)`` -> ``(N, K) float32`` probabilities."""
        output: Output = self.engine.forward(batch)
        return softmax(output) if self.apply_softmax else output

    def classify(self, images: Sequence[bytes], top_ks: Sequence[int]) -> BatchResult:
        """Classify a batch: per image its top ``top_ks[i]`` classes or an :class:`ItemError`.

        Raises:
            gre.model.engines.EngineError: the forward pass failed (the whole batch is lost).
        """
        start = time.perf_counter()
        batch, outcomes = self.prepare(images)
        prepared = time.perf_counter()
        probabilities = self.probabilities(batch) if len(batch) else np.empty((0, 0), np.float32)
        done = time.perf_counter()
        rows = iter(probabilities)
        filled: list[Outcome] = [
            top_k(next(rows), k) if outcome is None else outcome
            for outcome, k in zip(outcomes, top_ks, strict=True)
        ]
        return BatchResult(filled, (prepared - start) * 1e3, (done - prepared) * 1e3)
