"""The images a benchmark POSTs: one file, a directory of images, or ../shared/images."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The photos the tests use: ../shared/images beside the repository, or $GRE_SHARED/images.
SHARED_IMAGES = Path(os.environ.get("GRE_SHARED", ROOT.parent / "shared")) / "images"
#: File name endings taken from a directory (gre decodes JPEG, PNG, BMP and WebP).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class Corpus:
    """Images read into memory, sent round-robin; ``paths[i]`` holds ``images[i]``."""

    paths: tuple[Path, ...]
    images: tuple[bytes, ...]

    @property
    def description(self) -> str:
        """E.g. ``"3 images from /work/shared/images (280.8 KiB in all)"``."""
        folders = sorted({str(p.parent) for p in self.paths})
        where = folders[0] if len(folders) == 1 else f"{len(folders)} folders"
        size = sum(map(len, self.images)) / 1024
        noun = "image" if len(self.paths) == 1 else "images"
        return f"{len(self.paths)} {noun} from {where} ({size:.1f} KiB in all)"


def load_corpus(source: Path | None = None) -> Corpus:
    """Read ``source``: one image file, or every image in a directory (sorted by name, not
    recursive); ``None`` reads the shared photos (:data:`SHARED_IMAGES`).

    Raises:
        FileNotFoundError: ``source`` does not exist, or a directory holds no image (named
            by :data:`IMAGE_SUFFIXES`), or an image file is empty.
    """
    path = SHARED_IMAGES if source is None else source
    if path.is_dir():
        paths = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise FileNotFoundError(f"{path} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    elif path.is_file():
        paths = [path]
    else:
        hint = " (the shared data folder beside the repository, or $GRE_SHARED)"
        raise FileNotFoundError(f"{path} does not exist{hint if source is None else ''}")
    images = tuple(p.read_bytes() for p in paths)
    empty = [str(p) for p, image in zip(paths, images, strict=True) if not image]
    if empty:
        raise FileNotFoundError(f"empty image file(s): {', '.join(empty)}")
    return Corpus(tuple(paths), images)
