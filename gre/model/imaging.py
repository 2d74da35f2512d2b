"""Recognise an encoded image from its magic bytes, read its size from the header, decode it.

The header is read before anything is decoded so that a decompression bomb (a few KB declaring
65500 x 65500 pixels) is refused without allocating its pixels, and so that what the decoder
would reject anyway gets a clear answer: a 12-bit JPEG is "unsupported" (415), not "corrupt".
Reading a header is O(1) for PNG, BMP and WebP and bounded for JPEG (:data:`MAX_JPEG_SEGMENTS`),
because it runs on the server's event loop. The Content-Type a client sends is never trusted.

Every decoded format's size comes from this header, not from OpenCV's own limits
(``OPENCV_IO_MAX_IMAGE_PIXELS``, 2**30 by default, and sides up to 2**20): those sit above the
default ``max_pixels`` and :data:`MAX_SIDE`; should a configured ``max_pixels`` reach them,
OpenCV's refusal is still a ``bad_image`` (:func:`decode_bgr`), never an unexpected error.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable
from typing import NamedTuple

import cv2
import numpy as np
import numpy.typing as npt

#: Formats gre decodes (with OpenCV).
DECODABLE = ("jpeg", "png", "bmp", "webp")

#: Longest side (px) gre decodes: libpng refuses sides over 1,000,000 (its default user limit)
#: and OpenCV over 2**20, so a longer side is refused from the header (413), as too large.
MAX_SIDE = 1_000_000

#: Most scans a JPEG may have (413 beyond). A decoder makes a pass over every block of a
#: component per scan, so a few hundred KB of repeated empty progressive scans kept OpenCV busy
#: for 36 s on a 6000 x 6000 image (1000 scans); no encoder writes more than 100, the longest
#: scan script libjpeg's cjpeg and jpegtran accept. (libjpeg-turbo's djpeg -maxscans guards the
#: same way.)
MAX_JPEG_SCANS = 100

#: Most marker segments read before a JPEG's frame header. Real files have a few dozen (APPn,
#: DQT, DHT, COM); the cap keeps a body of 4-byte segments from holding the event loop.
MAX_JPEG_SEGMENTS = 1000

#: Most chunks a PNG may have (real ones have a few dozen; an APNG two per frame). Walking
#: 16 MiB of 12-byte chunks in Python would hold a replica's decode thread for a second.
MAX_PNG_CHUNKS = 100_000

_FILL_BYTES = re.compile(rb"\xff+")
#: Bytes :func:`_count_scans` compares at a time (even: windows start at even offsets).
_SCAN_WINDOW = 1 << 20
# FF DA read as a little-endian 16-bit word, whatever the machine's byte order.
_WORD = np.dtype("<u2")
_SOS_WORD = 0xDAFF
#: Up to this many bytes, :func:`_count_scans` counts with bytes.count.
_SMALL_SCAN_BYTES = 4096
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Samples per pixel by PNG colour type: gray, RGB, palette, gray + alpha, RGBA.
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}

# SOFn markers: frame headers. C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Differential (hierarchical) frames, which libjpeg-turbo does not decode.
_HIERARCHICAL_SOF = frozenset({0xC5, 0xC6, 0xC7, 0xCD, 0xCE, 0xCF})

# Formats recognised only to answer "unsupported" (415) rather than "not an image" (400).
# OpenCV could decode GIF and TIFF too, but gre keeps libtiff's large surface and OpenCV's
# young GIF decoder away from clients' bytes: photos for a classifier come as JPEG, PNG, WebP.
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
    """An image gre cannot classify; ``code`` is its API error code (``bad_image`` ...), whose
    HTTP status the catalogue in ``gre.http.errors`` gives."""

    code = "bad_image"


class UnsupportedFormat(ImageError):
    """A recognised image format that gre does not decode (GIF, TIFF, SVG ...)."""

    code = "unsupported_format"


class TooManyPixels(ImageError):
    """The header declares more pixels than allowed, or a side longer than :data:`MAX_SIDE`
    (decompression-bomb guard)."""

    code = "too_large"


class TooManyScans(TooManyPixels):
    """A JPEG of more than :data:`MAX_JPEG_SCANS` scans (a decompression bomb of CPU time)."""


class ImageInfo(NamedTuple):
    """An encoded image's format and size as declared by its header (width, height in px).
    A tuple: the front end reads one per request, and a tuple is made 3x faster than a
    frozen dataclass."""

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
    if data.startswith(_PNG_MAGIC):
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
    head = data[:512].removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    if head.startswith(b"<svg") or (
        head.startswith((b"<?xml", b"<!doctype svg")) and b"<svg" in data[:4096].lower()
    ):
        raise UnsupportedFormat(f"SVG images are not supported; send {_decodable()}")
    raise ImageError(f"the body is not an image gre recognises ({_decodable()}){_hint(head)}")


def _hint(head: bytes) -> str:
    """How to send the image, for bodies that wrap one (a form upload, base64)."""
    if head.startswith(b"--") and b"content-disposition: form-data" in head:
        return "; this is a multipart form upload: POST the raw image bytes (curl --data-binary)"
    if head.startswith((b"data:image/", b"/9j/", b"ivborw0kggo")):  # data URL, base64 JPEG/PNG
        return "; this looks like base64: POST the raw image bytes"
    return ""


def _decodable() -> str:
    return ", ".join(f.upper() for f in DECODABLE)


def jpeg_frame_header(data: bytes, on_segment: Callable[[int, bytes], None] | None = None) -> int:
    """Where the first frame header (SOFn) of the JPEG ``data`` starts: the offset of its
    0xFF, with at least the marker, length, precision, height and width (9 bytes) there.
    ``on_segment(marker, payload)`` is called for each marker segment before it (APPn, DQT,
    DHT, COM ...). Bounded: at most :data:`MAX_JPEG_SEGMENTS` segments.

    Raises:
        ImageError: a bad marker, scan data or an end before any frame header, a header cut
            short, or no frame header within :data:`MAX_JPEG_SEGMENTS` segments.
    """
    pos = 2
    size = len(data)
    for _ in range(MAX_JPEG_SEGMENTS):
        # Nearly always one 0xFF and then the marker: the regex only for a run of fill bytes.
        if not (pos + 1 < size and data[pos] == 0xFF and data[pos + 1] != 0xFF):
            fill = _FILL_BYTES.match(data, pos)
            if fill is None:
                if pos >= size:
                    break
                raise ImageError("corrupt JPEG: bad marker before the frame header")
            pos = fill.end() - 1  # any run of fill bytes, then the last 0xFF starts the marker
        if pos + 4 > size:
            break
        marker = data[pos + 1]
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # standalone markers
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if marker in _SOF_MARKERS:
            if pos + 9 > size:
                break
            return pos
        if marker in (0xD8, 0xD9, 0xDA) or length < 2:  # SOI, EOI or scan data before a frame
            raise ImageError("corrupt JPEG: no frame header")
        if on_segment is not None:
            on_segment(marker, data[pos + 4 : pos + 2 + length])
        pos += 2 + length
    else:
        raise ImageError(f"corrupt JPEG: no frame header in its first {MAX_JPEG_SEGMENTS} segments")
    raise ImageError("truncated JPEG: the frame header is missing")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """Width and height from the first frame header (SOFn), as libjpeg reads it.

    Raises:
        ImageError: as :func:`jpeg_frame_header`.
        UnsupportedFormat: a frame gre's decoder (OpenCV's libjpeg-turbo, 8-bit) cannot read.
    """
    pos = jpeg_frame_header(data)
    precision = data[pos + 4]
    height, width = struct.unpack_from(">HH", data, pos + 5)
    _check_jpeg_frame(data[pos + 1], precision)
    return width, height


def _check_jpeg_frame(marker: int, precision: int) -> None:
    if marker in _HIERARCHICAL_SOF:
        raise UnsupportedFormat(
            f"hierarchical JPEG (SOF{marker - 0xC0}) is not supported; send a baseline, "
            "progressive or lossless JPEG"
        )
    if precision != 8:
        raise UnsupportedFormat(
            f"{precision}-bit JPEG is not supported; gre decodes 8-bit JPEG (re-encode it with "
            "8 bits per sample)"
        )


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


def _count_scans(data: bytes, limit: int) -> int:
    """Start-of-scan markers (FF DA) in ``data``, counting no further than past ``limit``.

    Entropy-coded data never holds FF DA (an FF there is followed by 00 or a restart marker),
    so this counts the scans; a thumbnail in an APPn segment adds its own, well within limits.
    It runs on the event loop, over every byte of each JPEG body: the bytes are read as 16-bit
    words twice, from an even and from an odd offset, and NumPy counts the words equal to
    FF DA (bytes.count(b"\xff\xda") is 4x slower, JPEG data being full of FF; finding the DA
    bytes and then looking behind each cost 2.5x the instructions). A MiB at a time bounds the
    comparisons' arrays; below :data:`_SMALL_SCAN_BYTES`, NumPy's fixed cost (4 us) is more
    than bytes.count's.
    """
    if len(data) <= _SMALL_SCAN_BYTES:
        return data.count(b"\xff\xda")
    count = 0
    starts = len(data) - 1  # a marker may start at any byte but the last
    for window in range(0, starts, _SCAN_WINDOW):
        end = min(window + _SCAN_WINDOW, starts)  # markers starting in [window, end)
        for first in (window, window + 1):
            words = np.frombuffer(data, _WORD, count=(end - first + 1) // 2, offset=first)
            count += int(np.count_nonzero(words == _SOS_WORD))
        if count > limit:
            break
    return count


def check_image(data: bytes, max_pixels: int) -> ImageInfo:
    """:func:`read_info`, then refuse what would cost too much to decode.

    Raises:
        ImageError, UnsupportedFormat: as :func:`read_info`.
        TooManyPixels: the declared size exceeds ``max_pixels`` (width x height), or a side
            exceeds :data:`MAX_SIDE`.
        TooManyScans: a JPEG with more than :data:`MAX_JPEG_SCANS` scans.
    """
    info = read_info(data)
    if info.width * info.height > max_pixels:
        raise TooManyPixels(
            f"the image is {info.width}x{info.height} = {info.width * info.height} pixels; "
            f"the limit is {max_pixels} pixels"
        )
    if max(info.width, info.height) > MAX_SIDE:
        raise TooManyPixels(
            f"the image is {info.width}x{info.height}; sides over {MAX_SIDE} pixels are not decoded"
        )
    if info.format == "jpeg" and _count_scans(data, MAX_JPEG_SCANS) > MAX_JPEG_SCANS:
        raise TooManyScans(
            f"the JPEG has more than {MAX_JPEG_SCANS} scans (no encoder writes that many; "
            "each costs a pass over the whole image)"
        )
    return info


def decode_bgr(data: bytes) -> npt.NDArray[np.uint8]:
    """Decode to ``(H, W, 3) uint8`` BGR with OpenCV.

    EXIF orientation is applied (``cv2.IMREAD_COLOR`` does so), grayscale becomes 3 channels,
    alpha is dropped, 16-bit samples become 8-bit.

    Call :func:`check_image` first: this trusts the size the header declares.

    Raises:
        ImageError: OpenCV cannot decode the bytes (it answers nothing, or raises), or a PNG's
            image data inflates to more than its image (:func:`check_png_data`).
    """
    if data.startswith(_PNG_MAGIC):
        check_png_data(data)
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # e.g. an empty buffer or a size over OpenCV's own limits
        reason = str(exc).strip().splitlines()[-1]
        raise ImageError(f"the image could not be decoded ({reason})") from None
    if image is None or image.size == 0:
        raise ImageError("the image data is corrupt or truncated and could not be decoded")
    return np.asarray(image, dtype=np.uint8)


def check_png_data(data: bytes) -> None:
    """Refuse a PNG whose compressed image data (IDAT) inflates past its image.

    libpng inflates the whole zlib stream, also what follows the last row ("Too much image
    data" is only a warning), at about 1 s per GiB; deflate expands up to 1032 x, so 16 MiB of
    compressed zeros behind a 1 x 1 image cost 20 s of a replica. Here the stream is inflated,
    and dropped, up to twice the image's raw size plus 1 MiB (Adam7 interlacing adds a filter
    byte per pass row), in this thread. That inflates a valid PNG twice: its decode costs
    about 80% more (3.4 ms more for a 480 x 360 photo, measured), small next to a forward, and
    never more than its image. A stream zlib cannot read is left for libpng to refuse.

    Raises:
        ImageError: more image data than the image, or more than :data:`MAX_PNG_CHUNKS` chunks.
    """
    if len(data) < 33:
        return  # no complete IHDR: libpng refuses it
    width, height, depth, colour = struct.unpack_from(">IIBB", data, 16)
    channels = _PNG_CHANNELS.get(colour)
    if channels is None:
        return
    limit = 2 * height * (1 + (width * channels * depth + 7) // 8) + (1 << 20)
    inflater = zlib.decompressobj()
    inflated, pos = 0, 8
    try:
        for _ in range(MAX_PNG_CHUNKS):
            if pos + 8 > len(data) or inflater.eof:
                return
            (length,) = struct.unpack_from(">I", data, pos)
            kind = data[pos + 4 : pos + 8]
            if kind == b"IEND":
                return
            if kind == b"IDAT":
                pending = data[pos + 8 : pos + 8 + length]
                while pending and not inflater.eof:
                    inflated += len(inflater.decompress(pending, 1 << 20))
                    if inflated > limit:
                        raise ImageError(
                            f"corrupt PNG: its image data inflates past the {width}x{height} "
                            "image it declares"
                        )
                    pending = inflater.unconsumed_tail
            pos += 12 + length
    except zlib.error:
        return
    raise ImageError(f"corrupt PNG: more than {MAX_PNG_CHUNKS} chunks")
