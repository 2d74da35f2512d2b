import base64
import io
import struct
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

from gre.model import imaging
from gre.model.imaging import (
    MAX_JPEG_SCANS,
    MAX_JPEG_SEGMENTS,
    MAX_SIDE,
    ImageError,
    TooManyPixels,
    TooManyScans,
    UnsupportedFormat,
    check_image,
    decode_bgr,
    read_info,
    sniff_format,
)
from tests.crafted import (
    blank_png,
    interlaced_png,
    png_inflating_past_its_image,
    progressive_with_scans,
)
from tests.support import shared, shared_image


@pytest.fixture(scope="module")
def cat() -> np.ndarray:
    return shared_image("images/cat.jpg")


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


# --- what OpenCV 4.14 (libjpeg-turbo 3.1, libpng 1.6) decodes, and how ----------------------


def imagecodecs_jpeg(data: np.ndarray, **options: Any) -> bytes:
    try:
        import imagecodecs
    except ImportError:
        pytest.fail("imagecodecs is missing: run `make test` (it installs .[dev])")
    return bytes(imagecodecs.jpeg8_encode(data, **options))


def test_cmyk_and_ycck_jpeg_decode_to_the_colours(cat: np.ndarray) -> None:
    # Adobe (Photoshop) CMYK is stored inverted; Pillow writes it so, and so does libjpeg
    # given 255 - CMYK. YCCK is that CMYK with its colour transform.
    cmyk = np.asarray(Image.fromarray(cat[..., ::-1].copy()).convert("CMYK"))
    out = io.BytesIO()
    Image.fromarray(cmyk, "CMYK").save(out, "JPEG", quality=95)
    ycck = imagecodecs_jpeg(255 - cmyk, level=95, colorspace="CMYK", outcolorspace="YCCK")
    for data in (out.getvalue(), ycck):
        assert np.abs(decode_bgr(data).astype(int) - cat).mean() < 3


def test_lossless_8_bit_jpeg_decodes_exactly(cat: np.ndarray) -> None:
    data = imagecodecs_jpeg(cat[..., ::-1].copy(), lossless=True)
    assert data[data.find(b"\xff\xc3") + 4] == 8  # SOF3, 8-bit
    assert np.array_equal(decode_bgr(data), cat)


@pytest.mark.parametrize("bits", [12, 16])
def test_jpeg_of_more_than_8_bits_is_unsupported(cat: np.ndarray, bits: int) -> None:
    samples = cat[..., ::-1].astype(np.uint16) << (bits - 8)
    options = {"bitspersample": bits} | ({"lossless": True} if bits == 16 else {})
    data = imagecodecs_jpeg(samples, **options)
    with pytest.raises(UnsupportedFormat, match=f"{bits}-bit JPEG"):
        read_info(data)
    with pytest.raises(ImageError):  # what the header check spares the decoder
        decode_bgr(data)


def test_hierarchical_jpeg_is_unsupported(cat: np.ndarray) -> None:
    jpeg = bytearray(cv2.imencode(".jpg", cat)[1].tobytes())
    jpeg[jpeg.find(b"\xff\xc0") + 1] = 0xC5  # SOF5, differential sequential
    with pytest.raises(UnsupportedFormat, match="hierarchical"):
        read_info(bytes(jpeg))


def test_16_bit_png_is_scaled_not_clipped(cat: np.ndarray) -> None:
    # The high byte (v >> 8): within one level of Caffe's v / 65535 * 255 (skimage's
    # img_as_float), never the 255 that clipping 16-bit values to 8 bits would give.
    wide = cat.astype(np.uint16) * 256 + np.uint16(200)
    decoded = decode_bgr(cv2.imencode(".png", wide)[1].tobytes())
    assert np.array_equal(decoded, cat)
    assert np.abs(decoded - wide / 65535 * 255).max() <= 1


def test_alpha_is_dropped_as_caffe_does(cat: np.ndarray) -> None:
    # caffe.io.load_image keeps the colour under the alpha (img[:, :, :3]), not a composite.
    alpha = np.arange(360 * 480, dtype=np.uint32).reshape(360, 480).astype(np.uint8)
    bgra = np.dstack([cat, alpha])
    assert np.array_equal(decode_bgr(cv2.imencode(".png", bgra)[1].tobytes()), cat)
    out = io.BytesIO()
    Image.fromarray(cat[..., ::-1].copy()).convert("LA").save(out, "PNG")
    gray = decode_bgr(out.getvalue())
    assert np.array_equal(gray[..., 0], gray[..., 2])


def test_interlaced_png_decodes_exactly(cat: np.ndarray) -> None:
    assert np.array_equal(decode_bgr(interlaced_png(cat)), cat)
    assert np.array_equal(decode_bgr(interlaced_png(cat[:5, :3])), cat[:5, :3])  # short passes


def test_png_data_inflating_past_its_image_is_refused_before_libpng_inflates_it() -> None:
    # 64 KB of body, 64 MiB of zeros after the only row: libpng would inflate them all.
    bomb = png_inflating_past_its_image(1, 1, tail_mib=64)
    assert len(bomb) < 100_000
    with pytest.raises(ImageError, match="inflates past the 1x1 image"):
        decode_bgr(bomb)
    assert decode_bgr(png_inflating_past_its_image(300, 200, tail_mib=0)).shape == (200, 300, 3)


def test_palette_png_is_expanded_to_its_colours(cat: np.ndarray) -> None:
    palette = Image.fromarray(cat[..., ::-1].copy()).convert("P")
    out = io.BytesIO()
    palette.save(out, "PNG")
    expected = np.asarray(palette.convert("RGB"))[..., ::-1]
    assert np.array_equal(decode_bgr(out.getvalue()), expected)


# --- bombs and floods -----------------------------------------------------------------------


def test_png_bomb_and_overlong_sides_are_refused_from_the_header() -> None:
    bomb = blank_png(10000, 10000)
    assert len(bomb) < 20_000
    with pytest.raises(TooManyPixels, match="10000x10000"):
        check_image(bomb, max_pixels=40_000_000)
    # 1,000,001 x 1 is few pixels, but libpng refuses sides over 1,000,000: say so.
    wide = blank_png(MAX_SIDE + 1, 1)
    with pytest.raises(TooManyPixels, match="sides over"):
        check_image(wide, max_pixels=40_000_000)
    assert decode_bgr(blank_png(64, 48)).shape == (48, 64, 3)


def test_webp_and_bmp_bombs_are_refused_from_the_header(cat: np.ndarray) -> None:
    lossy = bytearray(cv2.imencode(".webp", cat, [cv2.IMWRITE_WEBP_QUALITY, 80])[1].tobytes())
    assert lossy[12:16] == b"VP8 "
    struct.pack_into("<HH", lossy, 26, 16383, 16383)
    vp8l = cv2.imencode(".webp", cat, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes()[12:]
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes(4) + (16383).to_bytes(3, "little") * 2
    canvas = b"RIFF" + struct.pack("<I", 4 + len(vp8x) + len(vp8l)) + b"WEBP" + vp8x + vp8l
    bmp = bytearray(cv2.imencode(".bmp", cat)[1].tobytes())
    struct.pack_into("<ii", bmp, 18, 30000, -30000)  # negative: rows stored top-down
    for data, size in [(lossy, "16383x16383"), (canvas, "16384x16384"), (bmp, "30000x30000")]:
        with pytest.raises(TooManyPixels, match=size):
            check_image(bytes(data), max_pixels=40_000_000)


def test_jpeg_with_too_many_scans_is_refused(cat: np.ndarray) -> None:
    allowed = progressive_with_scans(cat, MAX_JPEG_SCANS)
    assert check_image(allowed, max_pixels=40_000_000).width == 480
    assert decode_bgr(allowed).shape == (360, 480, 3)
    with pytest.raises(TooManyScans, match=f"more than {MAX_JPEG_SCANS} scans"):
        check_image(progressive_with_scans(cat, MAX_JPEG_SCANS + 1), max_pixels=40_000_000)


def test_marker_floods_are_cut_short(cat: np.ndarray) -> None:
    # 16 MB of empty comment segments or fill bytes took seconds of the event loop to walk.
    segments = b"\xff\xd8" + b"\xff\xfe\x00\x02" * 4_000_000
    with pytest.raises(ImageError, match=f"first {MAX_JPEG_SEGMENTS} segments"):
        read_info(segments)
    fill = b"\xff\xd8" + b"\xff" * 16_000_000
    with pytest.raises(ImageError, match="truncated JPEG"):
        read_info(fill)
    # Fill bytes before a marker are legal (and libjpeg skips them).
    jpeg = cv2.imencode(".jpg", cat)[1].tobytes()
    padded = jpeg[:2] + b"\xff" * 1000 + jpeg[2:]
    assert read_info(padded).width == 480


# --- bodies that are not images -------------------------------------------------------------


def test_wrapped_images_get_a_hint() -> None:
    jpeg = shared("images/cat.jpg").read_bytes()
    form = httpx.Request("POST", "http://x/", files={"image": ("cat.jpg", jpeg)}).read()
    with pytest.raises(ImageError, match="multipart form upload"):
        read_info(form)
    with pytest.raises(ImageError, match="base64"):
        read_info(base64.b64encode(jpeg))
    with pytest.raises(ImageError, match="base64"):
        read_info(b"data:image/jpeg;base64," + base64.b64encode(jpeg))


def test_svg_with_a_bom_or_doctype_is_recognised() -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"/>'
    for data in (b"\xef\xbb\xbf" + svg, b"<!DOCTYPE svg>\n" + svg):
        with pytest.raises(UnsupportedFormat, match="SVG"):
            read_info(data)


def test_decoder_exceptions_become_image_errors() -> None:
    # cv2.imdecode raises (rather than answering None) on an empty buffer.
    with pytest.raises(ImageError, match="could not be decoded"):
        decode_bgr(b"")


def test_scans_of_a_small_jpeg_are_counted_alike(cat: np.ndarray) -> None:
    """Below _SMALL_SCAN_BYTES the scans are counted with bytes.count, not NumPy: the same
    limit holds."""
    tiny = cv2.resize(cat, (8, 8))
    allowed = progressive_with_scans(tiny, MAX_JPEG_SCANS)
    over = progressive_with_scans(tiny, MAX_JPEG_SCANS + 1)
    assert len(over) <= imaging._SMALL_SCAN_BYTES
    assert check_image(allowed, max_pixels=64).width == 8
    with pytest.raises(TooManyScans, match=f"more than {MAX_JPEG_SCANS} scans"):
        check_image(over, max_pixels=64)
    padded = over + bytes(imaging._SMALL_SCAN_BYTES)  # past the threshold: NumPy counts
    assert imaging._count_scans(padded, 10**6) == imaging._count_scans(over, 10**6)
    assert imaging._count_scans(over, 10**6) == MAX_JPEG_SCANS + 1


@pytest.mark.parametrize("window", [2, 16, imaging._SCAN_WINDOW])
def test_scans_are_counted_at_every_offset_and_across_windows(
    window: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Markers at even and odd offsets, at the first and last bytes and straddling a window's
    edge, each count once: the same as bytes.count over the whole body."""
    monkeypatch.setattr(imaging, "_SCAN_WINDOW", window)
    rng = np.random.default_rng(13)
    for size in (imaging._SMALL_SCAN_BYTES + 1, imaging._SMALL_SCAN_BYTES + 2, 50_001):
        body = bytearray(rng.choice(np.array([0x00, 0xDA, 0xFF], np.uint8), size).tobytes())
        body[:2] = body[-2:] = b"\xff\xda"
        for edge in range(window - 1, size - 1, max(window, 997)):  # FF before, DA after
            body[edge : edge + 2] = b"\xff\xda"
        data = bytes(body)
        assert imaging._count_scans(data, 10**9) == data.count(b"\xff\xda")


def test_scan_counting_stops_once_past_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imaging, "_SCAN_WINDOW", 4096)
    data = b"\xff\xda" * 10_000  # 20 kB: five windows of 2048 markers each
    assert imaging._count_scans(data, 10) == 2048
    assert imaging._count_scans(data, 10**9) == 10_000
