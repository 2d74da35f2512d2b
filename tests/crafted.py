"""Image bodies made by hand, for what no encoder at hand writes: PNG bombs, Adam7-interlaced
PNG, a zlib stream longer than its image, a progressive JPEG of too many scans."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Adam7 passes: first column, first row, column step, row step.
_ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk with its CRC."""
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png(ihdr: bytes, image_data: bytes) -> bytes:
    """A PNG of one IDAT chunk holding ``image_data`` (already compressed)."""
    return (
        PNG_MAGIC
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", image_data)
        + png_chunk(b"IEND", b"")
    )


def blank_png(width: int, height: int) -> bytes:
    """A valid 1-bit grayscale PNG of zeros: a PNG bomb (10000 x 10000 is about 12 KB)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return png(ihdr, zlib.compress(bytes(1 + (width + 7) // 8) * height, 9))


def png_inflating_past_its_image(width: int, height: int, tail_mib: int) -> bytes:
    """An 8-bit grayscale PNG of zeros whose zlib stream goes on for ``tail_mib`` MiB of zeros
    after the last row: about 1 KB of body per MiB that libpng inflates."""
    deflate = zlib.compressobj(9)
    parts = [deflate.compress(bytes(height * (1 + width)))]
    parts += [deflate.compress(bytes(1 << 20)) for _ in range(tail_mib)]
    parts.append(deflate.flush())
    return png(struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0), b"".join(parts))


def interlaced_png(image: np.ndarray) -> bytes:
    """``(H, W, 3) uint8`` BGR as an Adam7-interlaced 8-bit RGB PNG (filter 0 on every row)."""
    rgb = np.ascontiguousarray(image[..., ::-1])
    height, width = rgb.shape[:2]
    rows = b"".join(
        b"\x00" + row.tobytes()
        for x0, y0, dx, dy in _ADAM7
        if x0 < width and y0 < height
        for row in rgb[y0::dy, x0::dx]
    )
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1)
    return png(ihdr, zlib.compress(rows, 9))


def progressive_with_scans(image: np.ndarray, scans: int) -> bytes:
    """A progressive JPEG whose last scan is repeated until it has ``scans`` scans. OpenCV
    decodes it (warning of a bogus progression), one pass over the image per scan: 1000 scans
    of a 6000 x 6000 image, 480 KB, took 36 s."""
    data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    last = data[data.rfind(b"\xff\xda") : -2]
    return data[:-2] + last * (scans - data.count(b"\xff\xda")) + b"\xff\xd9"
