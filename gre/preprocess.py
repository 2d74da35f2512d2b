"""Decoded image to input blob, reproducing Caffe's conventions.

The order of operations is caffe.io.Transformer.preprocess's: resize (squash), centre crop as
caffe.Classifier does, HWC -> CHW, channel order, ``raw_scale``, minus the mean, times
``input_scale``. Pixels arrive as OpenCV decodes them (BGR, 0-255), which is the [0, 1] image of
``caffe.io.load_image`` times 255; so a pixel is multiplied by ``raw_scale / 255``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from gre.config import PreprocessConfig
from gre.meanfile import load_mean

Blob = npt.NDArray[np.float32]


class PreprocessConfigError(ValueError):
    """The preprocessing settings do not fit the net (e.g. a crop larger than the resize)."""


def crop_offset(size: int, crop: int) -> int:
    """Start of a centre crop, as caffe.Classifier (``int(size / 2 - crop / 2)``) and Caffe's
    data layer (``(size - crop) / 2``) both compute it."""
    return (size - crop) // 2


@dataclass(frozen=True)
class Preprocessor:
    """A picklable, ready-to-run preprocessing pipeline for one net.

    Attributes:
        input_shape: the net input ``(C, H, W)``.
        resize: ``(H, W)`` the image is squashed to before cropping.
        mean: ``(C, 1, 1)`` pixel mean or ``(C, H, W)`` mean image already cropped to the
            input, in the net's channel order, 0-``raw_scale`` scale; ``None`` for no mean.
        raw_scale, input_scale: as caffe.io.Transformer.
        rgb: ``True`` when the net takes RGB (the decoded image is BGR).
    """

    input_shape: tuple[int, int, int]
    resize: tuple[int, int]
    mean: Blob | None
    raw_scale: float
    input_scale: float
    rgb: bool

    @classmethod
    def build(cls, config: PreprocessConfig, input_shape: tuple[int, int, int]) -> Preprocessor:
        """Check ``config`` against the net input and load the mean.

        Raises:
            PreprocessConfigError: sizes that cannot give the net input, or a mean of the wrong
                shape for ``mean_mode``.
            OSError, gre.meanfile.MeanFileError: the mean file cannot be read.
        """
        channels, height, width = input_shape
        if channels not in (1, 3):
            raise PreprocessConfigError(f"the net takes {channels} channels; gre feeds 1 or 3")
        resize = (height, width) if config.resize == "input" else tuple(config.resize)
        if config.crop == "none" and resize != (height, width):
            raise PreprocessConfigError(
                f"preprocess.resize {list(resize)} differs from the net input {[height, width]}"
                ' and preprocess.crop = "none"; use crop = "center" or resize = "input"'
            )
        if resize[0] < height or resize[1] < width:
            raise PreprocessConfigError(
                f"preprocess.resize {list(resize)} is smaller than the net input "
                f"{[height, width]}: cannot crop"
            )
        mean = _load_mean(config, channels, (resize[0], resize[1]), (height, width))
        return cls(
            input_shape=input_shape,
            resize=(resize[0], resize[1]),
            mean=mean,
            raw_scale=config.raw_scale,
            input_scale=config.input_scale,
            rgb=config.channel_order == "RGB",
        )

    def __call__(self, image: npt.NDArray[np.uint8]) -> Blob:
        """``(H, W, 3) uint8`` BGR image -> ``(C, H, W) float32`` input blob."""
        channels, height, width = self.input_shape
        if image.shape[:2] != self.resize:
            # Bilinear, as caffe.io.resize_image's default interp_order=1.
            size = (self.resize[1], self.resize[0])
            image = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR))
        top = crop_offset(self.resize[0], height)
        left = crop_offset(self.resize[1], width)
        image = image[top : top + height, left : left + width]
        if channels == 1:
            pixels = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[np.newaxis]
        else:
            pixels = image.transpose(2, 0, 1)
            if self.rgb:
                pixels = pixels[::-1]
        blob = pixels.astype(np.float32)
        if self.raw_scale != 255.0:
            blob *= np.float32(self.raw_scale / 255.0)
        if self.mean is not None:
            blob -= self.mean
        if self.input_scale != 1.0:
            blob *= np.float32(self.input_scale)
        return blob


def _load_mean(
    config: PreprocessConfig,
    channels: int,
    resize: tuple[int, int],
    input_hw: tuple[int, int],
) -> Blob | None:
    if config.mean is None:
        return None
    if isinstance(config.mean, Path):
        mean = load_mean(config.mean)
    else:
        mean = np.asarray(config.mean, dtype=np.float32)
    if mean.shape[0] != channels:
        raise PreprocessConfigError(
            f"preprocess.mean has {mean.shape[0]} channels; the net takes {channels}"
        )
    if config.mean_mode == "pixel":
        # A mean image becomes its per-channel average, as Caffe's classification example.
        pixel = mean.reshape(channels, -1).mean(axis=1) if mean.ndim == 3 else mean
        return pixel.astype(np.float32).reshape(channels, 1, 1)
    if mean.ndim != 3:
        raise PreprocessConfigError('preprocess.mean_mode = "image" needs a mean image file')
    # Caffe's data layer subtracts the mean image at the image's own crop window: bring the
    # mean to the resize size (centre crop, as the data layer), then crop it like the image.
    for size_h, size_w in (resize, input_hw):
        if mean.shape[1] < size_h or mean.shape[2] < size_w:
            raise PreprocessConfigError(
                f"the mean image is {mean.shape[1]}x{mean.shape[2]}, smaller than {size_h}x{size_w}"
            )
        top = crop_offset(mean.shape[1], size_h)
        left = crop_offset(mean.shape[2], size_w)
        mean = mean[:, top : top + size_h, left : left + size_w]
    return np.ascontiguousarray(mean, dtype=np.float32)
