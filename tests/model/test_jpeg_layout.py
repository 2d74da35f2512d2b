"""gre.model.jpeg_layout: frame, components and EXIF orientation from a JPEG's header."""

from __future__ import annotations

import io
import struct

import cv2
import numpy as np
import pytest
from PIL import Image

from gre.model.jpeg_layout import JpegLayout, exif_orientation, jpeg_layout
from tests.model.test_imaging import imagecodecs_jpeg
from tests.support import shared, shared_image


def with_orientation(image: np.ndarray, orientation: int, **save: object) -> bytes:
    """``image`` (BGR) as a JPEG whose EXIF says ``orientation``, written by Pillow."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    Image.fromarray(image[..., ::-1].copy()).save(out, "JPEG", exif=exif.tobytes(), **save)
    return out.getvalue()


def test_real_photos_are_baseline_three_and_one_component_frames() -> None:
    assert jpeg_layout(shared("images/cat.jpg").read_bytes()) == JpegLayout(0xC0, 3, 1)
    gray = jpeg_layout(shared("images/cat_gray.jpg").read_bytes())
    assert gray is not None
    assert gray.components == 1
    assert gray.device_decodable


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_read_as_opencv_applies_it(orientation: int) -> None:
    cat = shared_image("images/cat.jpg")
    data = with_orientation(cat, orientation, progressive=True)
    layout = jpeg_layout(data)
    assert layout == JpegLayout(0xC2, 3, orientation)
    turned = orientation >= 5  # OpenCV swaps the sides exactly when the orientation does
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), 1)
    assert decoded is not None
    assert decoded.shape[:2] == ((480, 360) if turned else (360, 480))


def test_big_endian_exif_and_junk_orientations() -> None:
    def tiff(order: str, magic: bytes, kind: int, value: int) -> bytes:
        entry = struct.pack(order + "HHIHH", 0x0112, kind, 1, value, 0)
        return magic + struct.pack(order + "I", 8) + struct.pack(order + "H", 1) + entry

    assert exif_orientation(tiff(">", b"MM\x00*", 3, 6)) == 6
    assert exif_orientation(tiff("<", b"II*\x00", 3, 8)) == 8
    assert exif_orientation(tiff("<", b"II*\x00", 3, 9)) == 1  # outside 1-8
    assert exif_orientation(tiff("<", b"II*\x00", 4, 6)) == 1  # not a SHORT
    assert exif_orientation(b"XX" + tiff("<", b"II*\x00", 3, 6)[2:]) == 1
    assert exif_orientation(tiff("<", b"II*\x00", 3, 6)[:12]) == 1  # cut inside the IFD


def test_what_nvjpeg_does_not_decode_stays_on_the_host() -> None:
    cat = shared_image("images/cat.jpg")
    cmyk = io.BytesIO()
    Image.fromarray(cat[..., ::-1].copy()).convert("CMYK").save(cmyk, "JPEG")
    lossless = imagecodecs_jpeg(cat[..., ::-1].copy(), lossless=True)
    for data, frame, components in ((cmyk.getvalue(), 0xC0, 4), (lossless, 0xC3, 3)):
        layout = jpeg_layout(data)
        assert layout is not None
        assert (layout.frame, layout.components) == (frame, components)
        assert not layout.device_decodable


def test_not_a_jpeg_or_an_unreadable_header_is_none() -> None:
    cat = shared_image("images/cat.jpg")
    png = cv2.imencode(".png", cat)[1].tobytes()
    jpeg = shared("images/cat.jpg").read_bytes()
    frame = jpeg.index(b"\xff\xc0")
    assert jpeg_layout(png) is None
    assert jpeg_layout(jpeg[: frame + 5]) is None  # cut inside the frame header
    assert jpeg_layout(b"\xff\xd8\xff\xda\x00\x02") is None  # scan data before any frame
    assert jpeg_layout(b"\xff\xd8\xff") is None
