"""Decoded image to input blob, reproducing Caffe's conventions.

The order of operations is caffe.Classifier.predict's: resize (squash), centre crop, then
caffe.io.Transformer.preprocess: HWC -> CHW, channel order, ``raw_scale``, minus the mean, times
``input_scale``. Pixels arrive as OpenCV decodes them (BGR, 0-255), which is the [0, 1] image of
``caffe.io.load_image`` times 255; so a pixel is multiplied by ``raw_scale / 255``.

The squash is cv2.resize (``resize_method = "opencv"``, the default) or :func:`caffe_resize`
(``"caffe"``), which reproduces caffe.io.resize_image; docs/fidelity.md has the measured
differences of each from pycaffe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from gre.config import PreprocessConfig
from gre.model.meanfile import load_mean

Blob = npt.NDArray[np.float32]
#: A crop before the arithmetic: ``(C, H, W)`` or ``(N, C, H, W)``, uint8 (or float32 after
#: :func:`caffe_resize`).
Pixels = npt.NDArray[Any]
ResizeMethod = Literal["opencv", "caffe"]


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
        resize_method: ``"opencv"`` (cv2.resize INTER_LINEAR on uint8) or ``"caffe"``
            (:func:`caffe_resize`, as caffe.io.resize_image).
    """

    input_shape: tuple[int, int, int]
    resize: tuple[int, int]
    mean: Blob | None
    raw_scale: float
    input_scale: float
    rgb: bool
    resize_method: ResizeMethod = "opencv"

    @classmethod
    def build(cls, config: PreprocessConfig, input_shape: tuple[int, int, int]) -> Preprocessor:
        """Check ``config`` against the net input and load the mean.

        Raises:
            PreprocessConfigError: sizes that cannot give the net input, or a mean of the wrong
                shape for ``mean_mode``.
            OSError, gre.model.meanfile.MeanFileError: the mean file cannot be read.
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
            resize_method=config.resize_method,
        )

    @property
    def pixel_dtype(self) -> type[np.uint8] | type[np.float32]:
        """What :meth:`pixels` gives: ``uint8`` after cv2.resize (or none), ``float32`` after
        :func:`caffe_resize`, whose squash is not on the 0-255 integers."""
        return np.float32 if self.resize_method == "caffe" else np.uint8

    @property
    def normalization(self) -> Normalization:
        """The arithmetic that turns :meth:`pixels` into the input blob."""
        return Normalization(
            pixel_scale=self.raw_scale / 255.0, mean=self.mean, input_scale=self.input_scale
        )

    def pixels(self, image: npt.NDArray[np.uint8], out: npt.NDArray[Any] | None = None) -> Pixels:
        """The geometric half: ``(H, W, 3) uint8`` BGR image -> ``(C, H, W)`` crop in the net's
        channel order, of :attr:`pixel_dtype`, written into ``out`` when given (one image's
        slot of a batch, so that decode threads fill a batch without a copy)."""
        channels, height, width = self.input_shape
        squashed: npt.NDArray[Any] = image
        if self.resize_method == "caffe":
            # caffe.Classifier.predict resizes every image, even one already at image_dims
            # (where resize_image changes nothing): skipping it is exact.
            if image.shape[:2] != self.resize:
                squashed = caffe_resize(image, self.resize)
        elif image.shape[:2] != self.resize:
            # Bilinear, as caffe.io.resize_image's default interp_order=1 (no anti-aliasing).
            size = (self.resize[1], self.resize[0])
            squashed = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR))
        top = crop_offset(self.resize[0], height)
        left = crop_offset(self.resize[1], width)
        cropped = squashed[top : top + height, left : left + width]
        if out is None:
            out = np.empty(self.input_shape, dtype=self.pixel_dtype)
        order = (0,) if channels == 1 else (2, 1, 0) if self.rgb else (0, 1, 2)
        planes = [out[channel] for channel in order]
        # OpenCV writes into planes of the crop's dtype that are contiguous (a batch slot's
        # are) and refuses others: those get its own planes, copied.
        usable = out.dtype == cropped.dtype and all(p.flags.c_contiguous for p in planes)
        if channels == 1:
            gray = cv2.cvtColor(cropped, cv2.COLOR_BGR2GRAY, dst=planes[0] if usable else None)
            _write_planes([gray], planes)
        else:
            # HWC -> CHW: cv2.split deinterleaves straight into the planes, from a contiguous
            # copy of the crop: from the crop itself (a strided view) OpenCV splits row by row,
            # entering a trace region per row: 19 vs 14 us for 227^2 uint8 with the copy, and in
            # 20 of 31 replica starts on a Firecracker VM each region cost ~1 us, tripling the
            # replica's CPU per image (perf: the time was in the region's prologue).
            contiguous = np.ascontiguousarray(cropped)
            _write_planes(cv2.split(contiguous, planes if usable else None), planes)
        return out

    def __call__(self, image: npt.NDArray[np.uint8]) -> Blob:
        """``(H, W, 3) uint8`` BGR image -> ``(C, H, W) float32`` input blob."""
        return self.normalization.apply(self.pixels(image))


def _write_planes(written: Sequence[npt.NDArray[Any]], planes: list[npt.NDArray[Any]]) -> None:
    """Copy OpenCV's outputs into ``planes`` unless it wrote them in place (then its binding
    hands back the very arrays it was given: identity, not ``.ctypes.data``, which builds a
    ctypes object per call)."""
    for result, plane in zip(written, planes, strict=True):
        if result is not plane:
            plane[...] = result


@dataclass(frozen=True)
class Normalization:
    """caffe.io.Transformer.preprocess's arithmetic, after the crop: ``((pixels *
    pixel_scale) - mean) * input_scale`` in float32, in that order (a step that changes
    nothing is skipped, as before), so that NumPy here and torch on a device give the same
    bits.

    Attributes:
        pixel_scale: ``raw_scale / 255`` (pixels arrive 0-255, Transformer's image 0-1).
        mean: ``(C, 1, 1)`` or ``(C, H, W)`` float32, or ``None``.
        input_scale: Transformer's ``input_scale``.
    """

    pixel_scale: float
    mean: Blob | None
    input_scale: float

    def apply(self, pixels: npt.NDArray[Any], out: Blob | None = None) -> Blob:
        """``(..., C, H, W)`` pixels (uint8 or float32) -> float32 of the same shape, into
        ``out`` when given. One pass over the pixels for the usual nets (a mean and no
        scales): the subtraction converts as it goes, with no float32 copy first."""
        if out is None:
            out = np.empty(pixels.shape, dtype=np.float32)
        source: npt.NDArray[Any] = pixels
        if self.pixel_scale != 1.0:
            np.multiply(source, np.float32(self.pixel_scale), out=out)
            source = out
        if self.mean is not None:
            np.subtract(source, self.mean, out=out)
            source = out
        if self.input_scale != 1.0:
            np.multiply(source, np.float32(self.input_scale), out=out)
            source = out
        if source is not out:
            out[...] = source
        return out


def gaussian_kernel(sigma: float, truncate: float = 4.0) -> npt.NDArray[np.float64]:
    """The 1-D Gaussian of scipy.ndimage.gaussian_filter1d: radius ``int(truncate * sigma +
    0.5)``, weights ``exp(-x**2 / (2 sigma**2))`` normalised to sum 1, float64, odd length."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 / (sigma * sigma) * x * x)
    kernel: npt.NDArray[np.float64] = phi / phi.sum()
    return kernel


_Taps = tuple[
    npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.float64], npt.NDArray[np.float64]
]


def _linear_taps(size: int, new_size: int) -> _Taps:
    """Order-1 taps of scipy.ndimage.zoom(grid_mode=True, mode="grid-constant") on one axis.

    Output sample ``k`` sits at input coordinate ``c = (k + 0.5) * size / new_size - 0.5``
    (pixel centres at integers: the half-pixel grid); its value is ``(1 - t) x[i] + t x[i+1]``
    with ``i = floor(c)``, ``t = c - i``; a tap outside ``[0, size - 1]`` reads the constant 0
    (so when upsampling, the first and last samples fade towards 0). Returns ``i`` and
    ``i + 1`` clipped into range, and their weights (0 for a tap outside).
    """
    coords = (np.arange(new_size, dtype=np.float64) + 0.5) * (size / new_size) - 0.5
    first = np.floor(coords)
    frac = coords - first
    lo = first.astype(np.intp)
    hi = lo + 1
    w_lo = np.where((lo >= 0) & (lo < size), 1.0 - frac, 0.0)
    w_hi = np.where((hi >= 0) & (hi < size), frac, 0.0)
    return np.clip(lo, 0, size - 1), np.clip(hi, 0, size - 1), w_lo, w_hi


#: Kernels longer than this (shrinking an axis about 16x or more) are applied only at the taps
#: (:func:`_filter_and_sample`); shorter ones with cv2.sepFilter2D over the whole axis, which is
#: faster for them.
_LONG_KERNEL = 256

#: Outputs :func:`_filter_and_sample` computes per matrix product: fewer waste less on zero
#: weights, more make fewer, larger products.
_BLOCK = 8


def _squash_axis(pixels: npt.NDArray[np.float32], axis: int, new_size: int) -> Blob:
    """One axis of :func:`caffe_resize`: the anti-aliasing Gaussian when the axis shrinks,
    then the order-1 taps; float32 in and out (as scipy's filter output), float64 taps."""
    size = pixels.shape[axis]
    if size == new_size:  # zoom 1: the taps are the identity, and no filter
        return pixels
    lo, hi, w_lo, w_hi = _linear_taps(size, new_size)
    sigma = (size / new_size - 1.0) / 2.0
    if new_size < size and sigma > 1e-15:  # scipy skips an axis with sigma <= 1e-15
        kernel = gaussian_kernel(sigma)
        if kernel.size > _LONG_KERNEL:
            return _filter_and_sample(pixels, axis, kernel, lo, hi, w_lo, w_hi)
        if kernel.size > 1:
            one = np.ones(1, dtype=np.float64)
            kernel_x, kernel_y = (one, kernel) if axis == 0 else (kernel, one)
            filtered = cv2.sepFilter2D(
                pixels, cv2.CV_32F, kernel_x, kernel_y, borderType=cv2.BORDER_CONSTANT
            )
            pixels = np.asarray(filtered, dtype=np.float32).reshape(pixels.shape)
    shape = [1] * pixels.ndim
    shape[axis] = new_size
    out = np.take(pixels, lo, axis=axis) * w_lo.reshape(shape)
    out += np.take(pixels, hi, axis=axis) * w_hi.reshape(shape)
    return out.astype(np.float32)


def _filter_and_sample(
    pixels: npt.NDArray[np.float32],
    axis: int,
    kernel: npt.NDArray[np.float64],
    lo: npt.NDArray[np.intp],
    hi: npt.NDArray[np.intp],
    w_lo: npt.NDArray[np.float64],
    w_hi: npt.NDArray[np.float64],
) -> Blob:
    """The Gaussian along ``axis`` (zero outside the image), evaluated only at the taps.

    Output ``k`` is ``w_lo[k] f[lo[k]] + w_hi[k] f[hi[k]]`` with ``f`` the filtered axis: one
    weighted sum of the ``len(kernel) + 1`` inputs around ``lo[k]``. Filtering the whole axis
    first (as scipy does) costs ``size x len(kernel)`` per line, and ``len(kernel)`` grows with
    the shrink factor: a 5 KB PNG of 1,000,000 x 40 pixels would take hours. Here each block of
    :data:`_BLOCK` outputs is one matrix product with the inputs it reaches, about
    ``(_BLOCK + 4) x size`` multiply-adds per line whatever the factor.
    """
    size = pixels.shape[axis]
    radius = kernel.size // 2
    moved = np.moveaxis(pixels, axis, 0)
    lines = np.ascontiguousarray(moved).reshape(size, -1)
    out = np.empty((lo.size, lines.shape[1]), dtype=np.float32)
    for start in range(0, lo.size, _BLOCK):
        stop = min(start + _BLOCK, lo.size)
        first = max(int(lo[start]) - radius, 0)  # lo and hi never decrease
        last = min(int(hi[stop - 1]) + radius + 1, size)
        weights = np.zeros((stop - start, last - first))
        for row, k in enumerate(range(start, stop)):
            for tap, weight in ((int(lo[k]), w_lo[k]), (int(hi[k]), w_hi[k])):
                # kernel[0] sits at input tap - radius; inputs outside [0, size) are 0.
                begin, end = max(tap - radius, first), min(tap + radius + 1, last)
                offset = tap - radius
                weights[row, begin - first : end - first] += (
                    weight * kernel[begin - offset : end - offset]
                )
        out[start:stop] = weights @ lines[first:last].astype(np.float64)
    return np.ascontiguousarray(np.moveaxis(out.reshape(lo.size, *moved.shape[1:]), 0, axis))


def caffe_resize(image: npt.NDArray[Any], size: tuple[int, int]) -> Blob:
    """Squash ``(H, W, C)`` or ``(H, W)`` pixels to ``size = (H', W')`` exactly as pycaffe's
    ``caffe.io.resize_image(image, size)`` (interp_order=1) does, with OpenCV and NumPy only.

    resize_image calls ``skimage.transform.resize(order=1, mode="constant")`` on the image
    rescaled to [0, 1] by its global min and max, then maps the result back. Current
    scikit-image does (1) when any axis shrinks, a Gaussian anti-aliasing filter with
    ``sigma = max(0, (H / H' - 1) / 2)`` per axis (scipy.ndimage.gaussian_filter, truncate 4.0,
    zero outside the image), here cv2.sepFilter2D with the same kernels and BORDER_CONSTANT 0;
    (2) bilinear sampling on the half-pixel grid with zeros outside (ndimage.zoom with
    grid_mode=True, mode "grid-constant"), here :func:`_linear_taps`. The zeros of both are
    zeros of the [0, 1] image, i.e. the image's minimum, so the work is done on
    ``image - image.min()``. Both steps are separable, so each axis is filtered and sampled in
    turn, which is the same linear map. The clip to the input range that resize
    applies cannot change a convex combination. A constant image comes back constant.

    Units are the input's (gre passes 0-255 pixels); float32 out. Agrees with
    caffe.io.resize_image within 1e-4 on the 0-255 scale (both round to float32; 2e-4 where an
    axis shrinks 30x or more, measured). Costs O(pixels) whatever the shrink factor.
    """
    pixels = np.asarray(image, dtype=np.float32)
    low = pixels.min()
    if pixels.max() == low:
        return np.full((*size, *pixels.shape[2:]), low, dtype=np.float32)
    pixels = pixels - low
    # The axes commute. Rows first, unless that grows the image and columns first leaves less
    # in between (a 40 x 1,000,000 image stretched to 256 rows first is 3 GB of float32).
    height, width = pixels.shape[:2]
    if size[0] * width <= max(height * width, height * size[1]):
        out = _squash_axis(_squash_axis(pixels, 0, size[0]), 1, size[1])
    else:
        out = _squash_axis(_squash_axis(pixels, 1, size[1]), 0, size[0])
    out += low
    return out


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
