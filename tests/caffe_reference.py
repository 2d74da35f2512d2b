"""The reference preprocessing: pycaffe's own pieces, composed as caffe.Classifier does.

Nothing of gre's preprocessing is used here: the image comes from ``caffe.io.load_image``
(float32 RGB in [0, 1]), is squashed with ``caffe.io.resize_image`` to ``image_dims``, centre
cropped with caffe.Classifier.predict's arithmetic, and turned into the input blob by a
``caffe.io.Transformer``. Only the reading of gre's settings (:class:`PreprocessConfig`) and of
the mean file (with pycaffe's ``caffe_pb2`` / NumPy) is done here.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from gre.config import PreprocessConfig
from gre.model.imaging import sniff_format
from gre.model.meanfile import _BlobProto

Array = npt.NDArray[np.float32]


def require_caffe() -> ModuleType:
    """``import caffe`` (quietly), or fail the test saying how to get pycaffe."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        import caffe
    except ImportError as exc:
        pytest.fail(
            f"pycaffe is not importable ({exc}): run `make test`, which builds it "
            "(scripts/build-caffe.sh, cached under ~/.cache/gre) and points the venv at it",
            pytrace=False,
        )
    module: ModuleType = caffe
    return module


def load_image(source: Path | bytes) -> Array:
    """``caffe.io.load_image``: ``(H, W, 3) float32`` RGB in [0, 1]. Bytes go through a
    temporary file, since load_image takes a path (named by the format: imageio picks its
    reader by the suffix)."""
    caffe = require_caffe()
    if isinstance(source, Path):
        return np.asarray(caffe.io.load_image(str(source)), dtype=np.float32)
    with tempfile.NamedTemporaryFile(suffix=f".{sniff_format(source)}") as file:
        file.write(source)
        file.flush()
        return np.asarray(caffe.io.load_image(file.name), dtype=np.float32)


def write_binaryproto(mean: npt.NDArray[Any], path: Path) -> Path:
    """Write a ``(C, H, W)`` mean as Caffe's compute_image_mean does: a BlobProto with the
    legacy 4-D shape ``(1, C, H, W)`` and float data (gre.model.meanfile's schema)."""
    blob = _BlobProto()
    blob.num, (blob.channels, blob.height, blob.width) = 1, mean.shape
    blob.data.extend(np.asarray(mean, dtype=np.float32).ravel().tolist())
    path.write_bytes(blob.SerializeToString())
    return path


def _read_mean(mean: list[float] | Path) -> npt.NDArray[Any]:
    caffe = require_caffe()
    if isinstance(mean, list):
        return np.asarray(mean)
    if mean.suffix == ".npy":
        return np.asarray(np.load(mean))
    blob = caffe.proto.caffe_pb2.BlobProto()
    blob.ParseFromString(mean.read_bytes())
    array = np.asarray(caffe.io.blobproto_to_array(blob))
    return array[0] if array.ndim == 4 else array


def centre_crop_window(image_dims: tuple[int, ...], crop_dims: tuple[int, ...]) -> list[int]:
    """caffe.Classifier.predict's centre crop, ``[top, left, bottom, right]``:
    ``center = image_dims / 2``, ``crop = center -/+ crop_dims / 2``, ``astype(int)``."""
    center = np.array(image_dims) / 2.0
    crop_half = np.array(crop_dims) / 2.0
    window = np.tile(center, (1, 2))[0] + np.concatenate([-crop_half, crop_half])
    return [int(v) for v in window.astype(int)]


def reference_blob(
    source: Path | bytes | Array,
    config: PreprocessConfig,
    input_shape: tuple[int, int, int],
) -> Array:
    """The ``(C, H, W) float32`` input blob pycaffe makes of an image with gre's settings.

    Args:
        source: an image file, encoded bytes, or an already decoded ``(H, W, 3)`` float32 RGB
            image in [0, 1] (to compare with identical pixels, leaving the decoder out).
        config: gre's ``[preprocess]`` settings (``resize_method`` is ignored: this *is* the
            Caffe resize).
        input_shape: the net input ``(3, H, W)``.
    """
    caffe = require_caffe()
    channels, height, width = input_shape
    assert channels == 3, "the reference covers 3-channel nets"
    image = source if isinstance(source, np.ndarray) else load_image(source)
    crop_dims = (height, width)
    image_dims = crop_dims if config.resize == "input" else tuple(config.resize)
    if config.crop == "none":
        assert image_dims == crop_dims, "crop none needs resize equal to the net input"
    # caffe.Classifier.predict: resize_image every input to image_dims, then the centre crop.
    resized = np.asarray(caffe.io.resize_image(image, image_dims), dtype=np.float32)
    top, left, bottom, right = centre_crop_window(image_dims, crop_dims)
    cropped = resized[top:bottom, left:right, :]

    transformer = caffe.io.Transformer({"data": (1, *input_shape)})
    transformer.set_transpose("data", (2, 0, 1))
    if config.channel_order == "BGR":
        transformer.set_channel_swap("data", (2, 1, 0))  # load_image gives RGB
    transformer.set_raw_scale("data", config.raw_scale)
    if config.mean is not None:
        mean = _read_mean(config.mean)
        if config.mean_mode == "pixel":
            if mean.ndim == 3:  # as python/classify.py: the mean image's per-channel average
                mean = mean.mean(1).mean(1)
        else:
            # Caffe's convention: the mean image is taken at the image's own crop window. Bring
            # it to image_dims by a centre crop (the data layer's), then crop it as the image.
            m_top, m_left, m_bottom, m_right = centre_crop_window(mean.shape[1:], image_dims)
            mean = mean[:, m_top:m_bottom, m_left:m_right][:, top:bottom, left:right]
        transformer.set_mean("data", mean)
    transformer.set_input_scale("data", config.input_scale)
    blob = np.asarray(transformer.preprocess("data", cropped), dtype=np.float32)
    assert blob.shape == input_shape
    return blob
