import struct

import cv2
import numpy as np
import pytest

from gre.imaging import (
    ImageError,
    TooManyPixels,
    UnsupportedFormat,
    check_image,
    decode_bgr,
    read_info,
    sniff_format,
)
from tests.support import shared


@pytest.fixture(scope="module")
def cat() -> np.ndarray:
    return cv2.imread(str(shared("images/cat.jpg")), cv2.IMREAD_COLOR)


@pytest.mark.parametrize(
    ("ext", "fmt"), [(".jpg", "jpeg"), (".png", "png"), (".bmp", "bmp"), (".webp", "webp")]
)
def test_decodable_formats_give_their_size(cat: np.ndarray, ext: str, fmt: str) -> None:
    data = cv2.imencode(ext, cat)[1].tobytes()
    info = read_info(data)
    assert (info.format, info.width, info.height) == (fmt, 480, 360)
    assert decode_bgr(data).shape == (360, 480, 3)


def test_lossless_webp_and_progressive_jpeg(cat: np.ndarray) -> None:
    lossless = cv2.imencode(".webp", cat, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes()
    assert read_info(lossless).width == 480
    progressive = cv2.imencode(".jpg", cat, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    assert read_info(progressive).height == 360


def test_grayscale_becomes_three_channels() -> None:
    image = decode_bgr(shared("images/cat_gray.jpg").read_bytes())
    assert image.shape == (360, 480, 3)
    assert np.array_equal(image[..., 0], image[..., 2])


def test_exif_orientation_is_applied(cat: np.ndarray) -> None:
    jpeg = cv2.imencode(".jpg", cat)[1].tobytes()
    # An APP1 Exif segment with Orientation = 6 (rotate 90 degrees clockwise to display).
    tiff = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1)
    tiff += struct.pack(">HHII", 0x0112, 3, 1, 6 << 16) + struct.pack(">I", 0)
    app1 = b"Exif\x00\x00" + tiff
    rotated = jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]
    assert read_info(rotated).width == 480  # the header is read as stored
    assert decode_bgr(rotated).shape == (480, 360, 3)  # decoded as displayed


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"", ImageError, "empty"),
        (b"\x00", ImageError, "not an image"),
        (b"<html><body>hi</body></html>", ImageError, "not an image"),
        (b'{"image": "cat.jpg"}', ImageError, "not an image"),
        (b"GIF89a" + b"\x00" * 20, UnsupportedFormat, "gif"),
        (b"II*\x00" + b"\x00" * 20, UnsupportedFormat, "tiff"),
        (
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>',
            UnsupportedFormat,
            "SVG",
        ),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", ImageError, "JPEG"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", ImageError, "PNG"),
    ],
)
def test_bad_bodies(data: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        read_info(data)


def test_decompression_bomb_is_refused_from_the_header(cat: np.ndarray) -> None:
    jpeg = bytearray(cv2.imencode(".jpg", cat)[1].tobytes())
    sof = jpeg.find(b"\xff\xc0")
    struct.pack_into(">HH", jpeg, sof + 5, 65500, 65500)
    with pytest.raises(TooManyPixels, match="65500x65500"):
        check_image(bytes(jpeg), max_pixels=40_000_000)
    png = bytearray(cv2.imencode(".png", cat)[1].tobytes())
    struct.pack_into(">II", png, 16, 100_000, 100_000)
    with pytest.raises(TooManyPixels):
        check_image(bytes(png), max_pixels=40_000_000)


def test_truncated_jpeg_that_decodes_nothing() -> None:
    data = shared("images/cat.jpg").read_bytes()
    with pytest.raises(ImageError):
        decode_bgr(data[:200])


def test_sniff_ignores_nothing_but_bytes() -> None:
    assert sniff_format(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "webp"
