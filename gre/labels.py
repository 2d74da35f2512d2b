"""Class labels: Caffe's synset words file, or an inline list."""

from __future__ import annotations

from pathlib import Path


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
