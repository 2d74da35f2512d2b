"""Preprocessing parity: gre's Preprocessor against pycaffe's own pipeline (caffe_reference).

Differences are measured in pixel levels on the 0-255 scale (the blob difference divided by
``raw_scale / 255 * input_scale``). docs/fidelity.md explains every bound used here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from gre.config import PreprocessConfig
from gre.model.imaging import decode_bgr
from gre.model.preprocess import Preprocessor, caffe_resize
from tests.caffe_reference import load_image, reference_blob, require_caffe, write_binaryproto
from tests.support import distinct_jpegs, package_file, photo_paths, shared

#: The parity target, in pixel levels on the 0-255 scale.
PARITY = 1e-3
MOBILENET_MEAN = [103.94, 116.78, 123.68]


def _file(relative: str) -> Callable[[], bytes]:
    return lambda: shared(relative).read_bytes()


def _package(package: str, relative: str) -> Callable[[], bytes]:
    return lambda: package_file(package, relative).read_bytes()


def _png(make: Callable[[], npt.NDArray[np.uint8]]) -> Callable[[], bytes]:
    def encode() -> bytes:
        ok, data = cv2.imencode(".png", make())
        assert ok
        return bytes(data.tobytes())

    return encode


def _read(path: Path) -> npt.NDArray[np.uint8]:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return np.asarray(image, dtype=np.uint8)


def _astronaut_at(size: int) -> npt.NDArray[np.uint8]:
    image = _read(package_file("skimage", "data/astronaut.png"))
    return np.asarray(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA))


def _dim_small_cat() -> npt.NDArray[np.uint8]:
    """A 150x200 crop of cat.jpg with its levels squeezed into [40, 200]: upsampled, and a
    minimum above 0 (caffe.io.resize_image's zero border is the image minimum)."""
    cat = _read(shared("images/cat.jpg"))[60:210, 150:350]
    return np.asarray(np.round(cat * (160 / 255) + 40), dtype=np.uint8)


@dataclass(frozen=True)
class Case:
    """One image and one set of settings; ``opencv_bound`` is the measured (max, mean) level
    difference of the default resize from pycaffe (None: no resize, parity expected): 10 %
    above what was measured (docs/fidelity.md)."""

    name: str
    image: Callable[[], bytes] = field(repr=False)
    settings: dict[str, Any]
    input_shape: tuple[int, int, int]
    opencv_bound: tuple[float, float] | None
    upsampled: bool = False


CASES = [
    Case("cat-open_nsfw", _file("images/cat.jpg"), {}, (3, 224, 224), (12.5, 0.46)),
    Case(
        "fish-bike-mean-binaryproto",
        _file("images/fish-bike.jpg"),
        {"mean": "binaryproto", "mean_mode": "image"},
        (3, 227, 227),
        (17.0, 0.74),
    ),
    Case(
        "china-mean-npy",
        _package("sklearn", "datasets/images/china.jpg"),
        {"mean": "npy", "mean_mode": "image"},
        (3, 227, 227),
        (58.5, 3.8),
    ),
    Case(
        "flower-pixel-mean-of-npy",
        _package("sklearn", "datasets/images/flower.jpg"),
        {"mean": "npy", "mean_mode": "pixel", "resize": (256, 256)},
        (3, 224, 224),
        (47.0, 1.0),
    ),
    Case(
        "cat_gray-squash-to-input",
        _file("images/cat_gray.jpg"),
        {"resize": "input", "crop": "none"},
        (3, 227, 227),
        (35.0, 0.80),
    ),
    Case(
        "astronaut-png-mobilenet",
        _package("skimage", "data/astronaut.png"),
        {"mean": MOBILENET_MEAN, "input_scale": 0.017},
        (3, 224, 224),
        (22.0, 1.03),
    ),
    Case(
        "coffee-png-rgb-raw_scale-1",
        _package("skimage", "data/coffee.png"),
        {"mean": [0.485, 0.456, 0.406], "raw_scale": 1.0, "channel_order": "RGB"},
        (3, 224, 224),
        (58.0, 1.41),
    ),
    Case(
        "encoded-png-upsampled-min-40",
        _png(_dim_small_cat),
        {"resize": "input", "crop": "none", "channel_order": "RGB"},
        (3, 227, 227),
        (30.0, 0.47),
        upsampled=True,
    ),
    Case(
        "png-at-256-no-resize-mean-image",
        _png(functools.partial(_astronaut_at, 256)),
        {"mean": "binaryproto", "mean_mode": "image"},
        (3, 227, 227),
        None,
    ),
    Case(
        "png-at-input-no-resize-rgb-scaled",
        _png(functools.partial(_astronaut_at, 224)),
        {"resize": "input", "crop": "none", "channel_order": "RGB", "input_scale": 0.017},
        (3, 224, 224),
        None,
    ),
]


@pytest.fixture(scope="module")
def mean_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    npy = shared("data/ilsvrc12/ilsvrc_2012_mean.npy")
    folder = tmp_path_factory.mktemp("means")
    proto = write_binaryproto(np.load(npy), folder / "ilsvrc_2012_mean.binaryproto")
    return {"npy": npy, "binaryproto": proto}


def config_of(case: Case, mean_files: dict[str, Path], method: str | None) -> PreprocessConfig:
    """The case's settings with ``resize_method`` (``None``: left at its default)."""
    settings = dict(case.settings)
    if isinstance(settings.get("mean"), str):
        settings["mean"] = mean_files[settings["mean"]]
    if method is not None:
        settings["resize_method"] = method
    return PreprocessConfig(**settings)


def levels(blob: npt.NDArray[np.float32], config: PreprocessConfig) -> npt.NDArray[np.float64]:
    """A blob (difference) in pixel levels on the 0-255 scale."""
    return np.abs(blob.astype(np.float64)) / (config.raw_scale / 255.0 * config.input_scale)


def gre_blob(case: Case, config: PreprocessConfig) -> npt.NDArray[np.float32]:
    return Preprocessor.build(config, case.input_shape)(decode_bgr(case.image()))


def decoded_rgb01(data: bytes) -> npt.NDArray[np.float32]:
    """gre's decoded pixels as caffe.io.load_image presents an image: RGB float32 in [0, 1]."""
    return np.ascontiguousarray(decode_bgr(data)[:, :, ::-1], dtype=np.float32) / np.float32(255)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_caffe_resize_method_matches_pycaffe_on_identical_pixels(
    case: Case, mean_files: dict[str, Path]
) -> None:
    """resize_method = "caffe": resize, crop and Transformer maths within 1e-3 levels."""
    config = config_of(case, mean_files, "caffe")
    data = case.image()
    expected = reference_blob(decoded_rgb01(data), config, case.input_shape)
    got = gre_blob(case, config)
    assert got.shape == expected.shape == case.input_shape
    assert got.dtype == np.float32
    assert levels(got - expected, config).max() <= PARITY
    # The comparison sees the image: the blob is far from constant.
    assert levels(expected, config).std() > 10


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_caffe_resize_method_matches_pycaffe_from_the_file(
    case: Case, mean_files: dict[str, Path]
) -> None:
    """End to end, each side decoding the bytes itself (OpenCV vs caffe.io.load_image)."""
    config = config_of(case, mean_files, "caffe")
    expected = reference_blob(case.image(), config, case.input_shape)
    assert levels(gre_blob(case, config) - expected, config).max() <= PARITY


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_default_opencv_resize_is_within_its_measured_bound(
    case: Case, mean_files: dict[str, Path]
) -> None:
    """resize_method = "opencv" (default): parity without a resize; with one, the measured
    (max, mean) level difference, mostly pycaffe's anti-aliasing (docs/fidelity.md)."""
    config = config_of(case, mean_files, None)
    assert config.resize_method == "opencv"
    expected = reference_blob(case.image(), config, case.input_shape)
    diff = levels(gre_blob(case, config) - expected, config)
    if case.opencv_bound is None:
        assert diff.max() <= PARITY
    else:
        max_bound, mean_bound = case.opencv_bound
        assert diff.max() <= max_bound
        assert diff.mean() <= mean_bound
        assert diff.max() > 1.0, "a resize that agrees this well needs no bound: use None"


DOWNSAMPLED = [c for c in CASES if c.opencv_bound is not None and not c.upsampled]


@pytest.mark.parametrize("case", DOWNSAMPLED, ids=lambda c: c.name)
def test_default_opencv_resize_is_pycaffe_without_anti_aliasing(
    case: Case, mean_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the default path leaves out: with scikit-image's anti-aliasing switched off inside
    caffe.io.resize_image, the two agree within cv2's 8-bit fixed-point rounding (0.77)."""
    caffe = require_caffe()
    from skimage.transform import resize

    monkeypatch.setattr(caffe.io, "resize", functools.partial(resize, anti_aliasing=False))
    config = config_of(case, mean_files, "opencv")
    expected = reference_blob(decoded_rgb01(case.image()), config, case.input_shape)
    diff = levels(gre_blob(case, config) - expected, config)
    assert diff.max() <= 0.8
    assert diff.mean() <= 0.3


_reencoded = functools.cache(distinct_jpegs)
DECODER_IMAGES: list[tuple[str, Callable[[], bytes]]] = [
    *((p.name, p.read_bytes) for p in photo_paths()),
    *((f"reencoded-q92-{i}", lambda i=i: _reencoded(14)[i]) for i in range(14)),
]


@pytest.mark.parametrize(("name", "image"), DECODER_IMAGES, ids=[n for n, _ in DECODER_IMAGES])
def test_opencv_and_caffe_io_decode_the_same_pixels(name: str, image: Callable[[], bytes]) -> None:
    """caffe.io.load_image (scikit-image -> imageio -> Pillow's libjpeg-turbo / libpng) and
    gre.model.imaging.decode_bgr (OpenCV's libjpeg-turbo / libpng) give identical pixels."""
    data = image()
    theirs = load_image(data).astype(np.float64) * 255.0
    ours = decode_bgr(data)[:, :, ::-1].astype(np.float64)
    assert theirs.shape == ours.shape
    assert np.abs(theirs - ours).max() <= PARITY


def _photo(relative: str) -> npt.NDArray[np.uint8]:
    return _read(shared(relative))


def _noise(seed: int, shape: tuple[int, ...]) -> npt.NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


RESIZES: list[tuple[str, Callable[[], npt.NDArray[np.uint8]], tuple[int, int]]] = [
    ("cat-to-256", lambda: _photo("images/cat.jpg"), (256, 256)),
    ("cat-levels-40-200-up", _dim_small_cat, (300, 260)),
    ("one-axis-up-one-down", lambda: _photo("images/cat.jpg")[:, 100:220], (256, 256)),
    ("tiny-7x9-to-3x20", lambda: _noise(3, (7, 9, 3)), (3, 20)),
    ("factor-5-down", lambda: _photo("images/fish-bike.jpg"), (64, 96)),
    ("257-to-256", lambda: _noise(4, (257, 300, 3)), (256, 256)),
    ("constant", lambda: np.full((40, 50, 3), 77, np.uint8), (30, 30)),
    ("one-channel", lambda: _photo("images/cat_gray.jpg")[:, :, :1], (200, 227)),
]


@pytest.mark.parametrize(("name", "make", "size"), RESIZES, ids=[r[0] for r in RESIZES])
def test_caffe_resize_equals_caffe_io_resize_image(
    name: str, make: Callable[[], npt.NDArray[np.uint8]], size: tuple[int, int]
) -> None:
    caffe = require_caffe()
    image = make()
    expected = caffe.io.resize_image(image.astype(np.float32) / np.float32(255), size) * 255
    got = caffe_resize(image, size)
    assert got.shape == expected.shape == (*size, image.shape[2])
    assert got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1e-4
