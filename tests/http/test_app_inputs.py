"""Hostile and unusual request bodies through a real ``gre serve``: each gets its documented
answer (200 for an image gre decodes, else a specific 4xx JSON error), and after each the
server still classifies, no replica crashed or restarted, and no temporary file is left.

Bodies are made here with OpenCV, Pillow, imagecodecs (12-bit and YCCK JPEG) and jpegtran
(arithmetic coding); bombs are real headers patched by hand. Bodies over ``max_body_bytes``
(with Content-Length, chunked, declared only) are in tests/test_app.py.
"""

from __future__ import annotations

import base64
import io
import shutil
import struct
import subprocess
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.crafted import (
    blank_png,
    interlaced_png,
    png_inflating_past_its_image,
    progressive_with_scans,
)
from tests.support import Server, running_server, shared, shared_image

SETTINGS = ("--set", "timeout_ms=300000", "--set", "max_body_bytes=4194304")


@pytest.fixture(scope="module")
def tmpdir_for_server(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server-tmp")


@pytest.fixture(scope="module", params=[1, 2], ids=["workers=1", "workers=2"])
def server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    tmpdir_for_server: Path,
) -> Iterator[Server]:
    """One server per ``server.workers`` value: every hostile input is refused alike
    through HTTP worker processes."""
    env = {"TMPDIR": str(tmpdir_for_server)}
    workers = ("--set", f"workers={request.param}")
    with running_server(tmp_path_factory.mktemp("inputs"), *SETTINGS, *workers, env=env) as server:
        yield server


# --- bodies -------------------------------------------------------------------------------


@cache
def cat_bgr() -> np.ndarray:
    return shared_image("images/cat.jpg")


def cat_jpeg() -> bytes:
    return shared("images/cat.jpg").read_bytes()


def encode(ext: str, image: np.ndarray | None = None, *params: int) -> bytes:
    ok, buffer = cv2.imencode(ext, cat_bgr() if image is None else image, list(params))
    assert ok
    return buffer.tobytes()


def pillow(fmt: str, mode: str | None = None, **options: object) -> bytes:
    picture = Image.fromarray(np.ascontiguousarray(cat_bgr()[..., ::-1]))
    if mode:
        picture = picture.convert(mode)
    out = io.BytesIO()
    picture.save(out, fmt, **options)
    return out.getvalue()


def animated(fmt: str) -> bytes:
    """The cat, then two other frames: gre classifies the first (lossless, so exactly)."""
    cat = Image.fromarray(np.ascontiguousarray(cat_bgr()[..., ::-1]))
    frames = [cat.rotate(angle) for angle in (90, 180)]
    out = io.BytesIO()
    options = {"lossless": True} if fmt == "WEBP" else {}
    cat.save(out, fmt, save_all=True, append_images=frames, duration=40, **options)
    return out.getvalue()


def imagecodecs_jpeg(data: np.ndarray, **options: Any) -> bytes:
    try:
        import imagecodecs
    except ImportError:
        pytest.fail("imagecodecs is missing: run `make test` (it installs .[dev])")
    return bytes(imagecodecs.jpeg8_encode(data, **options))


def jpegtran(*args: str) -> bytes:
    """cat.jpg rewritten losslessly by libjpeg-turbo's jpegtran (same pixels)."""
    if shutil.which("jpegtran") is None:
        pytest.fail(
            "jpegtran is missing: apt-get install libjpeg-turbo-progs "
            "(scripts/debian-packages.txt; `make test` installs it as root)"
        )
    done = subprocess.run(
        ["jpegtran", *args], input=cat_jpeg(), capture_output=True, check=True, timeout=60
    )
    return done.stdout


def cmyk_jpeg(transform: str) -> bytes:
    """Adobe-style (inverted) CMYK stored as CMYK or YCCK, as Photoshop writes them."""
    cmyk = np.asarray(Image.fromarray(cat_bgr()[..., ::-1].copy()).convert("CMYK"))
    return imagecodecs_jpeg(255 - cmyk, level=95, colorspace="CMYK", outcolorspace=transform)


def patch_sof(data: bytes, width: int, height: int) -> bytes:
    patched = bytearray(data)
    sof = min(i for i in (patched.find(b"\xff\xc0"), patched.find(b"\xff\xc2")) if i > 0)
    struct.pack_into(">HH", patched, sof + 5, height, width)
    return bytes(patched)


def webp_canvas_bomb() -> bytes:
    """A real lossless WebP behind a VP8X header declaring a 16384 x 16384 canvas."""
    vp8l = encode(".webp", None, cv2.IMWRITE_WEBP_QUALITY, 101)[12:]
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes(4) + (16383).to_bytes(3, "little") * 2
    body = b"WEBP" + vp8x + vp8l
    return b"RIFF" + struct.pack("<I", len(body)) + body


def lossy_webp_bomb() -> bytes:
    data = bytearray(encode(".webp", None, cv2.IMWRITE_WEBP_QUALITY, 80))
    struct.pack_into("<HH", data, 26, 16383, 16383)
    return bytes(data)


def bmp_bomb() -> bytes:
    data = bytearray(encode(".bmp"))
    struct.pack_into("<ii", data, 18, 30000, 30000)
    return bytes(data)


def corrupt_huffman_table() -> bytes:
    data = bytearray(cat_jpeg())
    dht = data.find(b"\xff\xc4")
    data[dht + 5 : dht + 21] = b"\xff" * 16  # code counts summing far past 256
    return bytes(data)


def truncated(fraction: float) -> bytes:
    data = cat_jpeg()
    return data[: int(len(data) * fraction)]


def random_bytes() -> bytes:
    return b"\x00" + np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes()


def multipart_form() -> bytes:
    request = httpx.Request(
        "POST", "http://x/", files={"image": ("cat.jpg", cat_jpeg(), "image/jpeg")}
    )
    return request.read()


# --- decoded: 200 ---------------------------------------------------------------------------

#: name, body, and which plain image it must answer exactly as (same pixels), or None.
DECODED: list[tuple[str, Callable[[], bytes], str | None]] = [
    ("progressive jpeg", lambda: encode(".jpg", None, cv2.IMWRITE_JPEG_PROGRESSIVE, 1), None),
    ("arithmetic jpeg", lambda: jpegtran("-arithmetic"), "cat.jpg"),
    ("arithmetic progressive jpeg", lambda: jpegtran("-arithmetic", "-progressive"), "cat.jpg"),
    ("restart markers", lambda: jpegtran("-restart", "1"), "cat.jpg"),
    ("cmyk jpeg", lambda: pillow("JPEG", "CMYK", quality=95), None),
    ("ycck jpeg", lambda: cmyk_jpeg("YCCK"), None),
    ("lossless jpeg", lambda: imagecodecs_jpeg(cat_bgr()[..., ::-1].copy(), lossless=True), "png"),
    ("16-bit png", lambda: encode(".png", cat_bgr().astype(np.uint16) * 257), "png"),
    ("interlaced png", lambda: interlaced_png(cat_bgr()), "png"),
    (
        "png with alpha",
        lambda: encode(".png", np.dstack([cat_bgr(), np.full((360, 480), 9, np.uint8)])),
        "png",
    ),
    ("palette png", lambda: pillow("PNG", "P"), None),
    ("gray+alpha png", lambda: pillow("PNG", "LA"), None),
    ("palette bmp", lambda: pillow("BMP", "P"), None),
    ("lossless webp", lambda: encode(".webp", None, cv2.IMWRITE_WEBP_QUALITY, 101), "png"),
    ("lossy webp", lambda: encode(".webp", None, cv2.IMWRITE_WEBP_QUALITY, 80), None),
    ("animated png", lambda: animated("PNG"), "png"),
    ("animated webp", lambda: animated("WEBP"), "png"),
]


Answers = dict[str, list[dict[str, object]]]


@pytest.fixture(scope="module")
def references(server: Server) -> Answers:
    """The answers for cat.jpg and for its pixels as a PNG."""
    with server.client() as client:
        return {
            "cat.jpg": client.post("/api/classify", content=cat_jpeg()).json(),
            "png": client.post("/api/classify", content=encode(".png")).json(),
        }


@pytest.mark.parametrize(("name", "make", "same_as"), DECODED, ids=[d[0] for d in DECODED])
def test_images_gre_decodes_are_classified(
    server: Server,
    tmpdir_for_server: Path,
    references: Answers,
    name: str,
    make: Callable[[], bytes],
    same_as: str | None,
) -> None:
    with server.client() as client:
        response = client.post("/api/classify", content=make())
    assert response.status_code == 200, response.text
    answer = response.json()
    assert [a["label"] for a in answer] == ["sfw", "nsfw"]
    assert sum(a["confidence"] for a in answer) == pytest.approx(1.0, abs=1e-5)
    if same_as is not None:
        expected = [a["confidence"] for a in references[same_as]]
        assert [a["confidence"] for a in answer] == pytest.approx(expected, abs=1e-6)
    assert_unharmed(server, tmpdir_for_server)


@pytest.mark.parametrize(
    "content_type", ["image/png", "text/html", "application/json", "multipart/form-data"]
)
def test_a_lying_content_type_changes_nothing(
    server: Server, tmpdir_for_server: Path, references: Answers, content_type: str
) -> None:
    with server.client() as client:
        image = client.post(
            "/api/classify", content=cat_jpeg(), headers={"Content-Type": content_type}
        )
        html = client.post(
            "/api/classify", content=b"<html>cat</html>", headers={"Content-Type": "image/jpeg"}
        )
    assert image.status_code == 200, image.text
    assert image.json() == references["cat.jpg"]
    assert (html.status_code, html.json()["error"]) == (400, "bad_image")
    assert_unharmed(server, tmpdir_for_server)


# --- refused: 4xx ----------------------------------------------------------------------------

#: name, body, status, error code, a fragment of the message.
REFUSED: list[tuple[str, Callable[[], bytes], int, str, str]] = [
    ("random bytes", random_bytes, 400, "bad_image", "not an image"),
    ("text", lambda: b"a cat, sitting\n", 400, "bad_image", "not an image"),
    ("json", lambda: b'{"image": "https://example.com/cat.jpg"}', 400, "bad_image", "not an image"),
    ("multipart form", multipart_form, 400, "bad_image", "multipart"),
    ("base64 jpeg", lambda: base64.b64encode(cat_jpeg()), 400, "bad_image", "base64"),
    ("jpeg cut at 10%", lambda: truncated(0.10), 400, "bad_image", "could not be decoded"),
    ("jpeg cut at 50%", lambda: truncated(0.50), 400, "bad_image", "could not be decoded"),
    ("jpeg cut at 99%", lambda: truncated(0.99), 400, "bad_image", "could not be decoded"),
    ("jpeg cut in its header", lambda: cat_jpeg()[:600], 400, "bad_image", "truncated"),
    ("corrupt huffman table", corrupt_huffman_table, 400, "bad_image", "could not be decoded"),
    (
        "12-bit jpeg",
        lambda: imagecodecs_jpeg(cat_bgr()[..., ::-1].astype(np.uint16) * 16, bitspersample=12),
        415,
        "unsupported_format",
        "12-bit JPEG",
    ),
    (
        "16-bit lossless jpeg",
        lambda: imagecodecs_jpeg(
            cat_bgr()[..., ::-1].astype(np.uint16) * 257, lossless=True, bitspersample=16
        ),
        415,
        "unsupported_format",
        "16-bit JPEG",
    ),
    ("gif", lambda: pillow("GIF"), 415, "unsupported_format", "gif"),
    ("tiff", lambda: pillow("TIFF"), 415, "unsupported_format", "tiff"),
    (
        "svg with doctype",
        lambda: b'<?xml version="1.0"?>\n<!DOCTYPE svg>\n<svg xmlns="http://www.w3.org/2000/svg"/>',
        415,
        "unsupported_format",
        "SVG",
    ),
    ("jpeg bomb", lambda: patch_sof(cat_jpeg(), 65500, 65500), 413, "too_large", "65500x65500"),
    (
        "progressive jpeg bomb",
        lambda: patch_sof(encode(".jpg", None, cv2.IMWRITE_JPEG_PROGRESSIVE, 1), 65500, 65500),
        413,
        "too_large",
        "65500x65500",
    ),
    ("png bomb", lambda: blank_png(10000, 10000), 413, "too_large", "10000x10000"),
    ("png a million pixels wide", lambda: blank_png(1_000_001, 1), 413, "too_large", "sides"),
    ("webp canvas bomb", webp_canvas_bomb, 413, "too_large", "16384x16384"),
    ("lossy webp bomb", lossy_webp_bomb, 413, "too_large", "16383x16383"),
    ("bmp bomb", bmp_bomb, 413, "too_large", "30000x30000"),
    ("jpeg scan bomb", lambda: progressive_with_scans(cat_bgr(), 150), 413, "too_large", "scans"),
    (
        "png inflating past its image",
        lambda: png_inflating_past_its_image(1, 1, tail_mib=256),
        400,
        "bad_image",
        "inflates past",
    ),
]


@pytest.mark.parametrize(
    ("name", "make", "status", "code", "message"), REFUSED, ids=[r[0] for r in REFUSED]
)
def test_bodies_gre_refuses_get_their_4xx(
    server: Server,
    tmpdir_for_server: Path,
    name: str,
    make: Callable[[], bytes],
    status: int,
    code: str,
    message: str,
) -> None:
    body = make()
    with server.client() as client:
        response = client.post("/api/classify", content=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == code
    assert message in response.json()["message"]
    assert_unharmed(server, tmpdir_for_server)


# --- the server is unharmed -----------------------------------------------------------------


def replica_restarts(server: Server, family_name: str = "gre_replica_restarts") -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name == family_name:
            return sum(sample.value for sample in family.samples)
    raise AssertionError(f"{family_name}_total is missing from /metrics")


def assert_unharmed(server: Server, tmpdir: Path) -> None:
    """The next valid request succeeds, every replica is up and none (nor any HTTP worker)
    ever restarted, nothing was left in the server's TMPDIR, and the server logged no
    traceback."""
    with server.client() as client:
        assert client.post("/api/classify", content=cat_jpeg()).status_code == 200
        ready = client.get("/readyz").json()["replicas"]
    assert ready["ready"] == ready["total"] == 1
    assert replica_restarts(server) == 0
    assert replica_restarts(server, "gre_http_worker_restarts") == 0
    assert sorted(p.name for p in tmpdir.iterdir()) == []
    assert "Traceback" not in server.output()
