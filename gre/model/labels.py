"""Class labels: Caffe's synset words file, or an inline list."""

from __future__ import annotations

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
