"""The replica's CPU work per image before a forward: decode, squash and crop, arithmetic.

``python -m benchmarks.preprocess`` times, on one thread (cv2.setNumThreads(1), as each of a
replica's decode threads runs), microseconds per image of each step the replica runs for a
JPEG of the tiny 16x16 kind :mod:`benchmarks.overhead` posts and for ``--image`` (cat.jpg):

- ``decode``: :func:`gre.model.imaging.decode_bgr` (libjpeg-turbo);
- ``pixels``: :meth:`gre.model.preprocess.Preprocessor.pixels` into a slot of a
  ``(32, C, H, W)`` batch, as :meth:`gre.model.classifier.Classifier.prepare_pixels` calls it,
  beside the plain way (the crop transposed HWC -> CHW by NumPy's strided copy);
- ``normalize``: :meth:`gre.model.preprocess.Normalization.apply` of one crop into a float32
  slot (mean and scales; on the device with the torch engine, so not the null engine's).

It checks that both ``pixels`` give the same crop before it prints.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from benchmarks.data import shared_path
from benchmarks.overhead import tiny_jpeg
from gre.config import PreprocessConfig
from gre.model.imaging import decode_bgr
from gre.model.preprocess import Preprocessor, crop_offset

#: ImageNet's net input (CaffeNet, AlexNet, SqueezeNet) and batch size.
INPUT_SHAPE = (3, 227, 227)
BATCH = 32


def transposed_crop(pre: Preprocessor, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """The plain way: cv2.resize, crop, then NumPy's copy of the transposed view ``(C, H, W)``."""
    _, height, width = pre.input_shape
    squashed = cv2.resize(image, pre.resize[::-1], interpolation=cv2.INTER_LINEAR)
    top, left = crop_offset(pre.resize[0], height), crop_offset(pre.resize[1], width)
    chw = squashed[top : top + height, left : left + width].transpose(2, 0, 1)
    return np.ascontiguousarray(chw[::-1] if pre.rgb else chw)


def per_call_us(call: Callable[[], object], repeat: int) -> float:
    """Best of 5 timings of ``repeat`` calls, microseconds per call."""
    return min(timeit.repeat(call, number=repeat, repeat=5)) / repeat * 1e6


def row(
    pre: Preprocessor,
    name: str,
    data: bytes,
    pixels: npt.NDArray[np.generic],
    blobs: npt.NDArray[np.float32],
    repeat: int,
) -> str:
    """One line of the table for ``data``: decode, pixels, plain, their ratio, normalize (us).

    Raises:
        ValueError: ``Preprocessor.pixels`` and :func:`transposed_crop` give different crops.
    """
    image = decode_bgr(data)
    slot = len(pixels) // 2
    if not np.array_equal(pre.pixels(image, pixels[slot]), transposed_crop(pre, image)):
        raise ValueError(f"{name}: Preprocessor.pixels differs from the transposed crop")
    decode_us = per_call_us(lambda: decode_bgr(data), repeat)
    pixels_us = per_call_us(lambda: pre.pixels(image, pixels[slot]), repeat)
    plain_us = per_call_us(lambda: transposed_crop(pre, image), repeat)
    apply_us = per_call_us(lambda: pre.normalization.apply(pixels[slot], out=blobs[slot]), repeat)
    return (
        f"{name:<16}{decode_us:>9.1f}{pixels_us:>9.1f}{plain_us:>9.1f}"
        f"{pixels_us / plain_us:>8.2f}{apply_us:>11.1f}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Print the table; exit with an error if the two ways give different crops."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.preprocess", description=__doc__)
    parser.add_argument("--image", type=Path, help="a photo (default ../shared/images/cat.jpg)")
    parser.add_argument("--repeat", type=int, default=200, help="calls per timing (200)")
    args = parser.parse_args(argv)
    photo = args.image or shared_path("images/cat.jpg")
    cv2.setNumThreads(1)
    pre = Preprocessor.build(PreprocessConfig(), INPUT_SHAPE)
    pixels = np.empty((BATCH, *INPUT_SHAPE), dtype=pre.pixel_dtype)
    blobs = np.empty((BATCH, *INPUT_SHAPE), dtype=np.float32)
    print(f"input {INPUT_SHAPE}, resize {pre.resize}, 1 thread: us per image")
    print(f"{'image':<16}{'decode':>9}{'pixels':>9}{'plain':>9}{'ratio':>8}{'normalize':>11}")
    for name, data in (("16x16 JPEG", tiny_jpeg(photo)), (photo.name, photo.read_bytes())):
        try:
            print(row(pre, name, data, pixels, blobs, args.repeat))
        except ValueError as error:
            parser.exit(1, f"{error}\n")


if __name__ == "__main__":
    main()
