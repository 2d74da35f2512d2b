"""Recognise an encoded image from its magic bytes, read its size from the header, decode it.

The header is read before anything is decoded so that a decompression bomb (a few KB declaring
65500 x 65500 pixels) is refused without allocating its pixels. The Content-Type a client sends
is never trusted.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

#: Formats gre decodes (with OpenCV).
DECODABLE = ("jpeg", "png", "bmp", "webp")

# Formats recognised only to answer "unsupported" (415) rather than "not an image" (400).
_UNSUPPORTED_MAGIC = (
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"%PDF", "pdf"),
    (b"\x00\x00\x00\x0cjP  ", "jpeg2000"),
    (b"\xff\x4f\xff\x51", "jpeg2000"),
    (b"qoif", "qoi"),
    (b"8BPS", "psd"),
    (b"\x00\x00\x01\x00", "ico"),
)


class ImageError(ValueError):
    """An image gre cannot classify; ``code`` is the API error code (``bad_image`` ...)."""

    code = "bad_image"


class UnsupportedFormat(ImageError):
    """A recognised image format that gre does not decode (GIF, TIFF, SVG ...)."""

    code = "unsupported_format"


class TooManyPixels(ImageError):
    """The header declares more pixels than allowed (decompression-bomb guard)."""

    code = "too_large"


@dataclass(frozen=True)
class ImageInfo:
    """An encoded image's format and size as declared by its header (width, height in px)."""

    format: str
    width: int
    height: int


def sniff_format(data: bytes) -> str:
    """Name the format from the magic bytes: one of :data:`DECODABLE`.

    Raises:
        ImageError: empty, or not recognisable as an image.
        UnsupportedFormat: a known image format that gre does not decode.
    """
    if not data:
        raise ImageError("the request body is empty; POST the image bytes")
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"BM") and len(data) >= 26:
        return "bmp"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "webp"
    for magic, name in _UNSUPPORTED_MAGIC:
        if data.startswith(magic):
            raise UnsupportedFormat(f"{name} images are not supported; send {_decodable()}")
    if data[4:8] == b"ftyp":
        raise UnsupportedFormat(f"HEIF/AVIF images are not supported; send {_decodable()}")
    head = data[:512].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:4096].lower()):
        raise UnsupportedFormat(f"SVG images are not supported; send {_decodable()}")
    raise ImageError(f"the body is not an image gre recognises ({_decodable()})")


def _decodable() -> str:
    return ", ".join(f.upper() for f in DECODABLE)


def _jpeg_size(data: bytes) -> tuple[int, int]:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ImageError("corrupt JPEG: bad marker before the frame header")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # standalone markers
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn
            if pos + 9 > len(data):
                break
            height, width = struct.unpack_from(">HH", data, pos + 5)
            return width, height
        if marker in (0xD9, 0xDA) or length < 2:  # EOI or scan data before any frame
            raise ImageError("corrupt JPEG: no frame header")
        pos += 2 + length
    raise ImageError("truncated JPEG: the frame header is missing")


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        (bits,) = struct.unpack_from("<I", data, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    raise ImageError("corrupt or truncated WebP header")


def read_info(data: bytes) -> ImageInfo:
    """Read format and declared size from the header alone; nothing is decoded.

    Raises:
        ImageError: empty, unrecognised, or a header too short or corrupt to give a size.
        UnsupportedFormat: a known format gre does not decode.
    """
    fmt = sniff_format(data)
    if fmt == "jpeg":
        width, height = _jpeg_size(data)
    elif fmt == "png":
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ImageError("truncated PNG: the IHDR header is missing")
        width, height = struct.unpack_from(">II", data, 16)
    elif fmt == "bmp":
        (header_size,) = struct.unpack_from("<I", data, 14)
        if header_size == 12:
            width, height = struct.unpack_from("<HH", data, 18)
        else:
            width, height = struct.unpack_from("<ii", data, 18)
            height = abs(height)  # negative height means top-down rows
    else:
        width, height = _webp_size(data)
    if width <= 0 or height <= 0:
        raise ImageError(f"the {fmt.upper()} header declares an empty image ({width}x{height})")
    return ImageInfo(fmt, width, height)


def check_image(data: bytes, max_pixels: int) -> ImageInfo:
    """:func:`read_info`, then refuse images over ``max_pixels`` (width x height).

    Raises:
        ImageError, UnsupportedFormat: as :func:`read_info`.
        TooManyPixels: the declared size exceeds ``max_pixels``.
    """
    info = read_info(data)
    if info.width * info.height > max_pixels:
        raise TooManyPixels(
            f"the image is {info.width}x{info.height} = {info.width * info.height} pixels; "
            f"the limit is {max_pixels} pixels"
        )
    return info


def decode_bgr(data: bytes) -> npt.NDArray[np.uint8]:
    """Decode to ``(H, W, 3) uint8`` BGR with OpenCV.

    EXIF orientation is applied (``cv2.IMREAD_COLOR`` does so), grayscale becomes 3 channels,
    alpha is dropped, 16-bit samples become 8-bit.

    Raises:
        ImageError: OpenCV cannot decode the bytes.
    """
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageError("the image data is corrupt or truncated and could not be decoded")
    return np.asarray(image, dtype=np.uint8)
