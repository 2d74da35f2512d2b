"""benchmarks.corpus: a file, a directory of images, the shared photos; clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.corpus import SHARED_IMAGES, load_corpus
from tests.support import shared


def test_default_corpus_is_the_shared_photos() -> None:
    shared("images")
    corpus = load_corpus()
    assert [p.name for p in corpus.paths] == ["cat.jpg", "cat_gray.jpg", "fish-bike.jpg"]
    assert corpus.paths[0].parent == SHARED_IMAGES
    assert all(image[:2] == b"\xff\xd8" for image in corpus.images)  # JPEG
    assert corpus.description.startswith(f"3 images from {SHARED_IMAGES} (")


def test_one_file_and_a_directory(tmp_path: Path) -> None:
    photo = shared("images/fish-bike.jpg")
    assert load_corpus(photo).images == (photo.read_bytes(),)
    (tmp_path / "b.PNG").write_bytes(b"png bytes")
    (tmp_path / "a.jpg").write_bytes(b"jpeg bytes")
    (tmp_path / "notes.txt").write_text("not an image")
    corpus = load_corpus(tmp_path)
    assert [p.name for p in corpus.paths] == ["a.jpg", "b.PNG"]
    assert corpus.images == (b"jpeg bytes", b"png bytes")


def test_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_corpus(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="holds no image"):
        load_corpus(tmp_path)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="empty image"):
        load_corpus(tmp_path)
