"""The data the benchmarks (and the tests) read: the shared folder beside the repository and
the photos scikit-learn and scikit-image ship.

Each helper raises :class:`DataMissing`, saying how to get the data, when it is absent.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
#: ../shared beside the repository, or $GRE_SHARED; resolved, so that it compares equal to the
#: (resolved) paths gre's config holds even when it is a symlink.
SHARED = Path(os.environ.get("GRE_SHARED", ROOT.parent / "shared")).resolve()


class DataMissing(RuntimeError):
    """A data file or package the caller needs is absent; the message says how to get it."""


def shared_path(relative: str) -> Path:
    """``SHARED / relative``.

    Raises:
        DataMissing: it does not exist.
    """
    path = SHARED / relative
    if not path.exists():
        raise DataMissing(
            f"{path} is missing: gre's tests and benchmarks need the shared data folder beside "
            "the repository (../shared, with images/, data/ilsvrc12/ and models/); set "
            "GRE_SHARED to its path"
        )
    return path


def package_file(package: str, relative: str) -> Path:
    """A data file shipped inside an installed package (scikit-learn / scikit-image photos).

    Raises:
        DataMissing: the package is not installed, or lacks the file.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataMissing(f"package {package!r} is missing: run `make test` (it installs .[dev])")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise DataMissing(f"{path} not found in {package}: reinstall it (`make test`)")
    return path


def photo_paths() -> list[Path]:
    """Real photos: ../shared/images and those scikit-learn and scikit-image ship.

    Raises:
        DataMissing: one of them is absent.
    """
    return [
        shared_path("images/cat.jpg"),
        shared_path("images/cat_gray.jpg"),
        shared_path("images/fish-bike.jpg"),
        package_file("sklearn", "datasets/images/china.jpg"),
        package_file("sklearn", "datasets/images/flower.jpg"),
        package_file("skimage", "data/astronaut.png"),
        package_file("skimage", "data/coffee.png"),
        package_file("skimage", "data/chelsea.png"),
        package_file("skimage", "data/rocket.jpg"),
        package_file("skimage", "data/motorcycle_left.png"),
    ]


def distinct_jpegs(count: int) -> list[bytes]:
    """``count`` distinct real-photo JPEGs (quality 92): the photos, then crops and flips.

    Raises:
        DataMissing: a photo is absent or OpenCV cannot read it.
    """
    photos = []
    for path in photo_paths():
        photo = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if photo is None:
            raise DataMissing(f"OpenCV cannot read {path}")
        photos.append(photo)
    images: list[bytes] = []
    variant = 0
    while len(images) < count:
        for photo in photos:
            h, w = photo.shape[:2]
            step = variant % 4
            crop = photo[step * h // 10 : h - step * h // 20, step * w // 12 :]
            if variant // 4 % 2:
                crop = crop[:, ::-1]
            ok, encoded = cv2.imencode(
                ".jpg", np.ascontiguousarray(crop), [cv2.IMWRITE_JPEG_QUALITY, 92]
            )
            assert ok
            images.append(encoded.tobytes())
            if len(images) == count:
                break
        variant += 1
    return images
