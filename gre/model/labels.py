"""Class labels: Caffe's synset words file, or an inline list."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gre.messages import Prediction


def read_synset_words(path: Path) -> list[str]:
    """One label per line, line i = class i, as Caffe's ``synset_words.txt``.

    The label is the whole line (``"n02123045 tabby, tabby cat"``), as GRE answers it.

    Raises:
        OSError: the file cannot be read.
        ValueError: the file has no labels.
    """
    labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    if not labels:
        raise ValueError(f"{path}: no labels")
    return labels


def label(labels: list[str] | None, index: int) -> str:
    """The label of class ``index``; its number as text when there are no labels for it."""
    return labels[index] if labels and 0 <= index < len(labels) else str(index)


def answer(prediction: Prediction, labels: list[str] | None) -> list[dict[str, Any]]:
    """GRE's response shape: ``[{"confidence": p, "label": "..."}, ...]``, best first."""
    return [
        {"confidence": confidence, "label": label(labels, index)}
        for index, confidence in zip(prediction.indices, prediction.confidences, strict=True)
    ]


class AnswerEncoder:
    """:func:`answer`'s JSON for one model's ``labels``, as bytes, without building the list
    of dicts: each class's ``,"label":"..."}`` is encoded once, so an answer costs one
    ``float.__repr__`` per class answered. The bytes are those of Starlette's JSONResponse
    (``json.dumps(answer(...), ensure_ascii=False, allow_nan=False, separators=(",",
    ":"))``, UTF-8), which ``tests/model/test_labels.py`` checks."""

    def __init__(self, labels: list[str] | None) -> None:
        self.labels = labels
        self._tails = [self._tail(label(labels, i)) for i in range(len(labels or ()))]

    @staticmethod
    def _tail(text: str) -> str:
        return ',"label":' + json.dumps(text, ensure_ascii=False) + "}"

    def encode(self, prediction: Prediction) -> bytes:
        """The JSON of ``answer(prediction, labels)``.

        Raises:
            ValueError: a confidence is NaN or infinite (not JSON), as ``json.dumps`` with
                ``allow_nan=False``.
        """
        return self.encode_top(prediction.indices, prediction.confidences)

    def encode_top(self, indices: Sequence[int], confidences: Sequence[float]) -> bytes:
        """:meth:`encode` of a prediction given as its class ``indices`` and their
        ``confidences``, most probable first.

        Raises:
            ValueError: as :meth:`encode`.
        """
        tails, parts = self._tails, []
        for index, confidence in zip(indices, confidences, strict=True):
            value = float(confidence)
            if not math.isfinite(value):
                raise ValueError(f"Out of range float values are not JSON compliant: {value!r}")
            tail = tails[index] if 0 <= index < len(tails) else self._tail(str(index))
            parts.append('{"confidence":' + float.__repr__(value) + tail)
        return ("[" + ",".join(parts) + "]").encode()
