"""What a JPEG's header says about how to decode it: its frame type, its components and its
EXIF orientation, read from the marker segments before the frame header (no pixel decoded).

``preprocess.decode = "gpu"`` sends only what nvJPEG decodes as libjpeg-turbo does (8-bit
Huffman baseline, extended or progressive frames of 1 or 3 components) to the device, and
turns the decoded image as ``cv2.IMREAD_COLOR`` does (EXIF orientation); the rest (lossless,
arithmetic-coded, CMYK / YCCK) decodes on the host.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from gre.model.imaging import ImageError, jpeg_frame_header

#: SOF0 baseline, SOF1 extended and SOF2 progressive, Huffman-coded: nvJPEG's frames.
HUFFMAN_FRAMES = frozenset({0xC0, 0xC1, 0xC2})

_EXIF = b"Exif\x00\x00"
_ORIENTATION_TAG = 0x0112
_SHORT = 3


@dataclass(frozen=True)
class JpegLayout:
    """A JPEG's frame marker (``0xC0`` = SOF0 ...), component count (1 gray, 3 YCbCr, 4 CMYK
    or YCCK) and EXIF orientation (1-8, TIFF's tag 274; 1 when absent or invalid)."""

    frame: int
    components: int
    orientation: int

    @property
    def device_decodable(self) -> bool:
        """Whether nvJPEG decodes it to the pixels libjpeg-turbo gives (up to its IDCT's
        rounding): an 8-bit Huffman frame of 1 or 3 components."""
        return self.frame in HUFFMAN_FRAMES and self.components in (1, 3)


def jpeg_layout(data: bytes) -> JpegLayout | None:
    """The layout of the JPEG ``data``, or ``None`` when it is not a JPEG or its header cannot
    be read (the host decoder then gives the error).

    Orientation is the first APP1 Exif segment's IFD0 tag 274, as libjpeg-turbo users such as
    OpenCV's ``ExifReader`` read it (little- or big-endian TIFF header).
    """
    if not data.startswith(b"\xff\xd8\xff"):
        return None
    exif: list[bytes] = []

    def keep_exif(marker: int, payload: bytes) -> None:
        if marker == 0xE1 and not exif and payload.startswith(_EXIF):
            exif.append(payload[len(_EXIF) :])

    try:
        pos = jpeg_frame_header(data, keep_exif)
    except ImageError:
        return None
    if pos + 10 > len(data):
        return None
    orientation = exif_orientation(exif[0]) if exif else 1
    return JpegLayout(data[pos + 1], data[pos + 9], orientation)


def exif_orientation(tiff: bytes) -> int:
    """Tag 274 (Orientation) of the IFD0 of an EXIF TIFF block; 1 when absent, malformed or
    outside 1-8."""
    if tiff[:4] == b"II*\x00":
        order = "<"
    elif tiff[:4] == b"MM\x00*":
        order = ">"
    else:
        return 1
    (ifd,) = struct.unpack_from(order + "I", tiff, 4)
    if ifd + 2 > len(tiff):
        return 1
    (count,) = struct.unpack_from(order + "H", tiff, ifd)
    for entry in range(min(count, (len(tiff) - ifd - 2) // 12)):
        tag, kind, _, value = struct.unpack_from(order + "HHIH", tiff, ifd + 2 + 12 * entry)
        if tag == _ORIENTATION_TAG:
            return value if kind == _SHORT and 1 <= value <= 8 else 1
    return 1
