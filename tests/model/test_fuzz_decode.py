"""Fuzz the path a body takes through gre, in-process: the front end's header check
(:func:`gre.model.imaging.check_image`), a replica's decode
(:func:`gre.model.imaging.decode_bgr`) and preprocessing (both resize methods), on real images
mutated by Hypothesis.

The invariant: an input blob of the net's shape, float32 and finite, or gre's
:class:`~gre.model.imaging.ImageError` family (which the API answers with a 4xx); nothing else. And
an image that passes the header check decodes to exactly the pixel count its header declared,
so ``max_pixels`` bounds what a decoder allocates.

``make test`` runs a short pass (``GRE_FUZZ_EXAMPLES``, default 150, a few seconds);
``make fuzz`` a long one (``DECODE_EXAMPLES=20000``). An input that ever broke the invariant
goes in ``tests/model/fuzz_regressions/`` (named for the outcome it must have, see
:func:`regression_inputs`), where :func:`test_regressions_hold` replays it and the fuzzer
mutates it further; the corpus starts with the hostile inputs the header check was built for.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from gre.config import PreprocessConfig, ServerConfig
from gre.model.imaging import ImageError, check_image, decode_bgr
from gre.model.preprocess import Preprocessor
from tests.crafted import interlaced_png
from tests.support import photo_paths, shared_image

EXAMPLES = int(os.environ.get("GRE_FUZZ_EXAMPLES", "150"))
MAX_PIXELS = ServerConfig().max_pixels
INPUT_SHAPE = (3, 224, 224)
REGRESSIONS = Path(__file__).parent / "fuzz_regressions"


@cache
def preprocessors() -> tuple[Preprocessor, ...]:
    return tuple(
        Preprocessor.build(PreprocessConfig(resize_method=method), INPUT_SHAPE)
        for method in ("opencv", "caffe")
    )


def run_pipeline(data: bytes) -> str:
    """Header check, decode and preprocess ``data`` as gre does. Returns ``"blob"``, or where
    gre refused it with an :class:`ImageError`: ``"header: <code>"`` or ``"decode: <code>"``.
    Anything else escapes: a failure."""
    try:
        info = check_image(data, MAX_PIXELS)
    except ImageError as exc:
        return f"header: {exc.code}"
    try:
        image = decode_bgr(data)
    except ImageError as exc:
        return f"decode: {exc.code}"
    assert image.dtype == np.uint8
    assert image.ndim == 3
    assert image.shape[2] == 3
    declared = info.width * info.height
    assert image.shape[0] * image.shape[1] == declared, (info, image.shape)
    for preprocess in preprocessors():
        blob = preprocess(image)
        assert blob.shape == INPUT_SHAPE
        assert blob.dtype == np.float32
        assert np.isfinite(blob).all()
    return "blob"


# --- seeds: real photos, and small encodings of one in every variant gre decodes -----------


def _encode(image: np.ndarray, ext: str, *params: int) -> bytes:
    ok, buffer = cv2.imencode(ext, image, list(params))
    assert ok, ext
    return buffer.tobytes()


def _pillow(image: np.ndarray, fmt: str, mode: str | None = None, **options: object) -> bytes:
    picture = Image.fromarray(np.ascontiguousarray(image[..., ::-1]))
    if mode:
        picture = picture.convert(mode)
    out = io.BytesIO()
    picture.save(out, fmt, **options)
    return out.getvalue()


def _animated(image: np.ndarray, fmt: str) -> bytes:
    """Three frames (OpenCV parses APNG's and animated WebP's frame headers itself)."""
    frames = [
        Image.fromarray(np.ascontiguousarray(np.roll(image, k, 1)[..., ::-1])) for k in (0, 8, 16)
    ]
    out = io.BytesIO()
    frames[0].save(out, fmt, save_all=True, append_images=frames[1:], duration=40)
    return out.getvalue()


@cache
def seeds() -> tuple[bytes, ...]:
    """Real JPEGs (../shared/images and the photos scikit-learn/-image ship), then the cat at
    64 x 48 in each JPEG, PNG, BMP and WebP variant gre decodes, animated ones included."""
    photos = [p.read_bytes() for p in photo_paths() if p.suffix == ".jpg"]
    cat = shared_image("images/cat.jpg")
    small = np.ascontiguousarray(cv2.resize(cat, (64, 48), interpolation=cv2.INTER_AREA))
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    alpha = np.dstack([small, np.arange(64 * 48, dtype=np.uint8).reshape(48, 64)])
    variants = [
        _encode(small, ".jpg"),
        _encode(small, ".jpg", cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
        _encode(small, ".jpg", cv2.IMWRITE_JPEG_RST_INTERVAL, 2),
        _encode(
            small, ".jpg", cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444
        ),
        _encode(gray, ".jpg"),
        _pillow(small, "JPEG", "CMYK"),
        _encode(small, ".png"),
        interlaced_png(small),
        _encode(small.astype(np.uint16) * 257, ".png"),
        _encode(alpha, ".png"),
        _encode(gray, ".png"),
        _pillow(small, "PNG", "P"),
        _pillow(small, "PNG", "LA"),
        _encode(small, ".bmp"),
        _pillow(small, "BMP", "P"),
        _encode(small, ".webp", cv2.IMWRITE_WEBP_QUALITY, 80),
        _encode(small, ".webp", cv2.IMWRITE_WEBP_QUALITY, 101),
        _encode(alpha, ".webp", cv2.IMWRITE_WEBP_QUALITY, 80),
        _animated(small, "PNG"),
        _animated(small, "WEBP"),
    ]
    return (*photos, *variants)


@cache
def regressions() -> tuple[bytes, ...]:
    """The regression corpus, mutated too: near misses of inputs that once mattered."""
    return tuple(path.read_bytes() for path in regression_inputs())


# --- mutations ------------------------------------------------------------------------------

Mutation = Callable[[bytearray], None]

# Field values that sit on the edges decoders check.
EDGY_U16 = st.sampled_from([0, 1, 2, 7, 8, 9, 15, 16, 17, 255, 256, 4095, 32767, 65535])
EDGY_U8 = st.sampled_from([0, 1, 2, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 0x11, 0x22, 0x44, 0xFF])


def _segments(data: bytes | bytearray) -> list[tuple[int, int, int]]:
    """``(marker, position, length)`` of a JPEG's marker segments up to the first scan."""
    found, pos = [], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        (length,) = struct.unpack_from(">H", data, pos + 2)
        found.append((marker, pos, length))
        if marker == 0xDA or length < 2:
            break
        pos += 2 + length
    return found


def _chunks(data: bytes | bytearray) -> list[tuple[bytes, int, int]]:
    """``(type, position, length)`` of a PNG's chunks."""
    found, pos = [], 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        found.append((bytes(data[pos + 4 : pos + 8]), pos, length))
        pos += 12 + length
    return found


def _put(data: bytearray, at: int, payload: bytes) -> None:
    """Overwrite ``data[at:]`` with ``payload`` where it fits (earlier mutations may have cut
    the data short)."""
    if at + len(payload) <= len(data):
        data[at : at + len(payload)] = payload


@st.composite
def byte_mutation(draw: st.DrawFn) -> Mutation:
    """Generic: flip, overwrite, insert, delete, duplicate a range, or truncate."""
    kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "duplicate", "truncate"]))
    where = draw(st.floats(0, 1))
    value = draw(st.binary(min_size=1, max_size=16))
    span = draw(st.integers(1, 512))

    def mutate(data: bytearray) -> None:
        if not data:
            return
        pos = min(int(where * len(data)), len(data) - 1)
        if kind == "flip":
            data[pos] ^= value[0] or 0x80
        elif kind == "set":
            data[pos : pos + len(value)] = value
        elif kind == "insert":
            data[pos:pos] = value
        elif kind == "delete":
            del data[pos : pos + span]
        elif kind == "duplicate":
            data[pos:pos] = data[pos : pos + span]
        else:
            del data[pos:]

    return mutate


@st.composite
def jpeg_mutation(draw: st.DrawFn) -> Mutation:
    """Edit a field of a JPEG marker segment: frame header (SOF marker type, precision,
    height, width, components and their sampling factors and tables), Huffman tables,
    quantisation tables, the scan header, the restart interval."""
    target = draw(st.sampled_from(["sof", "dht", "dqt", "sos", "dri"]))
    field = draw(st.integers(0, 255))
    u16 = draw(EDGY_U16)
    u8 = draw(EDGY_U8)
    noise = draw(st.binary(min_size=1, max_size=24))

    def mutate(data: bytearray) -> None:
        segments = _segments(data)
        if target == "sof":
            frames = [s for s in segments if 0xC0 <= s[0] <= 0xCF and s[0] not in (0xC4, 0xC8)]
            if not frames:
                return
            _, pos, length = frames[0]
            choice = field % 6
            if choice == 0:  # another SOF type: extended, progressive, lossless, arithmetic ...
                _put(data, pos + 1, bytes([0xC0 + u8 % 16]))
            elif choice == 1:
                _put(data, pos + 4, bytes([u8]))  # precision
            elif choice == 2:
                _put(data, pos + 5, struct.pack(">H", u16))  # height
            elif choice == 3:
                _put(data, pos + 7, struct.pack(">H", u16))  # width
            elif choice == 4:
                _put(data, pos + 9, bytes([u8 % 8]))  # component count
            else:  # a component's id, sampling factors or quantisation table
                _put(data, pos + 10 + field % max(length - 8, 1), bytes([u8]))
        elif target in ("dht", "dqt", "sos", "dri"):
            marker = {"dht": 0xC4, "dqt": 0xDB, "sos": 0xDA, "dri": 0xDD}[target]
            matches = [s for s in segments if s[0] == marker]
            if not matches:
                if target == "dri" and segments:  # add a restart interval before the scan
                    pos = segments[-1][1]
                    data[pos:pos] = b"\xff\xdd\x00\x04" + struct.pack(">H", u16)
                return
            _, pos, length = matches[field % len(matches)]
            if target == "dht" and field & 1:  # code-length counts: bogus or overflowing
                data[pos + 5 : pos + 5 + len(noise[:16])] = noise[:16]
            else:
                offset = 4 + field % max(length - 2, 1)
                data[pos + offset : pos + offset + min(len(noise), 4)] = noise[:4]

    return mutate


@st.composite
def png_mutation(draw: st.DrawFn) -> Mutation:
    """Edit IHDR (size, bit depth, colour type, interlace) or a chunk's bytes, then fix the
    CRC so that the decoder reads past it (or not, on a coin toss)."""
    field = draw(st.integers(0, 255))
    u16 = draw(EDGY_U16)
    u8 = draw(EDGY_U8)
    noise = draw(st.binary(min_size=1, max_size=16))
    fix_crc = draw(st.booleans())

    def mutate(data: bytearray) -> None:
        chunks = _chunks(data)
        if not chunks:
            return
        kind, pos, length = chunks[0] if field % 3 else chunks[field % len(chunks)]
        start = pos + 8
        if kind == b"IHDR" and field % 3:
            choice = field % 5
            if choice == 0:
                _put(data, start, struct.pack(">I", u16))  # width
            elif choice == 1:
                _put(data, start + 4, struct.pack(">I", u16))  # height
            else:
                _put(data, start + 6 + choice, bytes([u8]))  # bit depth, colour type, ...
        elif length:
            offset = start + field % length
            data[offset : offset + len(noise)] = noise
        end = start + length
        if fix_crc:
            _put(data, end, struct.pack(">I", zlib.crc32(data[pos + 4 : end])))

    return mutate


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A seed with one to four mutations, the format-aware ones matching its format."""
    data = bytearray(draw(st.sampled_from(seeds() + regressions())))
    if data.startswith(b"\xff\xd8"):
        aware = jpeg_mutation()
    elif data.startswith(b"\x89PNG"):
        aware = png_mutation()
    else:
        aware = byte_mutation()
    for mutate in draw(st.lists(st.one_of(byte_mutation(), aware), min_size=1, max_size=4)):
        mutate(data)
    return bytes(data)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated())
def test_mutated_images_give_a_blob_or_an_image_error(data: bytes) -> None:
    event(run_pipeline(data))  # --hypothesis-show-statistics tells how deep inputs got


@settings(max_examples=max(EXAMPLES // 5, 20), deadline=None)
@given(st.binary(max_size=4096))
def test_random_bytes_give_a_blob_or_an_image_error(data: bytes) -> None:
    event(run_pipeline(data))


def test_every_seed_decodes() -> None:
    """The seeds are real, decodable images: mutations start from what gre accepts."""
    assert [run_pipeline(seed) for seed in seeds()] == ["blob"] * len(seeds())


def regression_inputs() -> list[Path]:
    """``tests/model/fuzz_regressions/<outcome>--<what>.bin``: ``<outcome>`` is what
    :func:`run_pipeline` must answer, with ``-`` for ``": "`` (``blob``, ``header-too_large``,
    ``decode-bad_image`` ...)."""
    paths = sorted(REGRESSIONS.glob("*--*.bin"))
    assert paths, f"the regression corpus {REGRESSIONS} is empty"
    return paths


@pytest.mark.parametrize("path", regression_inputs(), ids=lambda p: p.stem)
def test_regressions_hold(path: Path) -> None:
    outcome = path.name.split("--")[0].replace("-", ": ", 1)
    assert run_pipeline(path.read_bytes()) == outcome
