"""cv2.resize INTER_LINEAR of uint8 images, bit for bit, in torch on any device.

The squash of ``preprocess.resize_method = "opencv"`` for images decoded on the device
(``preprocess.decode = "gpu"``): the crops are then the same bytes as the host pipeline's
(Preprocessor.pixels), so the only difference left between decoding on the GPU and on the CPU
is nvJPEG's IDCT. It follows OpenCV's fixed-point path (imgproc/src/resize.cpp, ``resize`` with
``INTER_LINEAR`` on ``CV_8U``), which a float bilinear (``F.interpolate``) misses by one level
on ~12 % of the values:

* per output column, ``fx = (float)((dx + 0.5) * src / dst - 0.5)``, ``sx = floor(fx)``; a
  column with ``sx < 0`` or ``sx >= src - 1`` is clamped to the edge with ``fx = 0``;
* the weights are ``round((1 - fx) * 2048)`` and ``round(fx * 2048)``
  (``INTER_RESIZE_COEF_BITS`` = 11, ``saturate_cast<short>`` rounds to even);
* rows likewise, except that ``fy`` is not zeroed at the edges: the rows ``sy`` and ``sy + 1``
  are clamped into the image instead (``resizeGeneric_Invoker``);
* the horizontal pass is exact in int32; the vertical pass is OpenCV's SIMD
  ``VResizeLinearVec_32s8u``: ``(((h0 >> 4) * b0 >> 16) + ((h1 >> 4) * b1 >> 16) + 2) >> 2``;
* an exact halving of both sides is INTER_AREA's 2x2 mean, ``(a + b + c + d + 2) >> 2``, as
  cv2.resize switches to it.

Checked against cv2.resize on real photos and random images of many sizes, up and down
(tests/model/test_engine_torch_resize.py).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

#: OpenCV's INTER_RESIZE_COEF_SCALE: weights in 1/2048ths.
_COEF_SCALE = 2048


@functools.lru_cache(maxsize=256)
def _taps(
    source: int, target: int, device: torch.device, clamp_weight: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per output sample along one axis: the two source indices and their int32 weights, on
    ``device``. Cached: a batch's photos mostly share a few sizes, and each miss costs four
    small host-to-device copies."""
    position = (torch.arange(target, dtype=torch.float64) + 0.5) * (source / target) - 0.5
    fraction = position.to(torch.float32)  # OpenCV rounds the coordinate to float
    first = torch.floor(fraction)
    fraction = fraction - first
    index = first.to(torch.int64)
    if clamp_weight:  # columns: an edge sample is the edge pixel, weight 1
        outside = (index < 0) | (index >= source - 1)
        fraction = torch.where(outside, torch.zeros_like(fraction), fraction)
        index = index.clamp(0, source - 1)
    lo = index.clamp(0, source - 1)
    hi = (index + 1).clamp(0, source - 1)
    w_lo = torch.round((1 - fraction) * _COEF_SCALE).to(torch.int32)
    w_hi = torch.round(fraction * _COEF_SCALE).to(torch.int32)
    return lo.to(device), hi.to(device), w_lo.to(device), w_hi.to(device)


def resize_linear(
    image: Tensor, size: tuple[int, int], window: tuple[int, int, int, int] | None = None
) -> Tensor:
    """``(C, H, W) uint8`` -> ``(C, H', W') uint8`` for ``size = (H', W')``, the bytes
    ``cv2.resize(hwc, (W', H'), interpolation=cv2.INTER_LINEAR)`` gives, on the image's
    device. ``window = (top, left, height, width)``: only that part of the result (a centre
    crop), computed alone: the same bytes as cropping the whole, for less work. An image
    already at ``size`` is only cropped."""
    _, height, width = image.shape
    new_height, new_width = size
    top, left, rows_out, columns_out = window or (0, 0, new_height, new_width)
    rows, columns = slice(top, top + rows_out), slice(left, left + columns_out)
    if (height, width) == size:
        return image if window is None else image[:, rows, columns]
    pixels = image.to(torch.int32)
    if (height, width) == (2 * new_height, 2 * new_width):
        total = (
            pixels[:, 0::2, 0::2]
            + pixels[:, 1::2, 0::2]
            + pixels[:, 0::2, 1::2]
            + pixels[:, 1::2, 1::2]
        )
        return ((total[:, rows, columns] + 2) >> 2).to(torch.uint8)
    x_lo, x_hi, a_lo, a_hi = (t[columns] for t in _taps(width, new_width, image.device, True))
    y_lo, y_hi, b_lo, b_hi = (t[rows] for t in _taps(height, new_height, image.device, False))
    across = pixels[:, :, x_lo] * a_lo + pixels[:, :, x_hi] * a_hi  # (C, H, w), x 2048
    upper = ((across[:, y_lo, :] >> 4) * b_lo[:, None]) >> 16
    lower = ((across[:, y_hi, :] >> 4) * b_hi[:, None]) >> 16
    return ((upper + lower + 2) >> 2).clamp(0, 255).to(torch.uint8)
