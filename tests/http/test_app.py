"""The HTTP API through a real ``gre serve`` on 127.0.0.1, with real photos and open_nsfw."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from gre.config import load_config
from gre.messages import Prediction
from gre.model.classifier import Classifier
from gre.offline import build_classifier
from tests.support import (
    Server,
    distinct_jpegs,
    photo_paths,
    running_server,
    shared,
    shared_image,
)

MAX_BODY = 4 * 1024 * 1024
# A deadline far above any forward time: these tests check answers, not speed (2 busy cores).
SETTINGS = (
    *("--set", "max_queue_delay_ms=20", "--set", f"max_body_bytes={MAX_BODY}"),
    *("--set", "timeout_ms=300000"),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("app"), *SETTINGS) as server:
        yield server


@pytest.fixture(scope="module")
def direct() -> Iterator[Classifier]:
    """The same engine and preprocessing, called in this process."""
    classifier = build_classifier(load_config(None, {}))
    yield classifier
    classifier.close()


def direct_answer(classifier: Classifier, data: bytes, k: int = 2) -> Prediction:
    outcome = classifier.classify([data], [k]).outcomes[0]
    assert isinstance(outcome, Prediction)
    return outcome


def assert_matches(
    answer: list[dict[str, object]], expected: Prediction, labels: list[str]
) -> None:
    assert [a["label"] for a in answer] == [labels[i] for i in expected.indices]
    confidences = [float(a["confidence"]) for a in answer]  # type: ignore[arg-type]
    np.testing.assert_allclose(confidences, list(expected.confidences), atol=1e-5)


LABELS = ["sfw", "nsfw"]


@pytest.mark.parametrize("path", photo_paths(), ids=lambda p: p.name)
def test_photos_answer_as_the_engine_called_directly(
    server: Server, direct: Classifier, path: Path
) -> None:
    data = path.read_bytes()
    with server.client() as client:
        response = client.post("/api/classify", content=data)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert_matches(answer, direct_answer(direct, data), LABELS)
    confidences = [a["confidence"] for a in answer]
    assert confidences == sorted(confidences, reverse=True)
    assert sum(confidences) == pytest.approx(1.0, abs=1e-5)
    timing = response.headers["server-timing"]
    assert all(f"{name};dur=" in timing for name in ("queue", "preprocess", "inference"))


def test_curl_style_post_of_cat(server: Server) -> None:
    with server.client() as client:
        response = client.post(
            "/api/classify",
            content=shared("images/cat.jpg").read_bytes(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},  # what curl -d sends
        )
    assert response.status_code == 200
    assert response.json()[0]["label"] == "sfw"


def test_top_k(server: Server) -> None:
    with server.client() as client:
        response = client.post(
            "/api/classify?top_k=1", content=shared("images/cat.jpg").read_bytes()
        )
    assert response.status_code == 200
    assert len(response.json()) == 1


async def test_concurrent_distinct_images_get_their_own_answers(
    server: Server, direct: Classifier
) -> None:
    images = distinct_jpegs(64)
    expected = [direct_answer(direct, data) for data in images]
    sfw = sorted(e.confidences[e.indices.index(0)] for e in expected)
    # The check can only catch cross-talk if the answers differ by more than its tolerance.
    assert min(np.diff(sfw)) > 0 or len(set(sfw)) > 48
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        before = (await client.get("/api/model")).json()["batches_by_size"]
        responses = await asyncio.gather(
            *(client.post("/api/classify", content=data) for data in images)
        )
        after = (await client.get("/api/model")).json()["batches_by_size"]
    for response, want in zip(responses, expected, strict=True):
        assert response.status_code == 200, response.text
        assert_matches(response.json(), want, LABELS)
    new = {int(k): v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
    assert sum(size * count for size, count in new.items()) == 64
    assert max(new) > 1, f"no batch larger than 1 was formed: {new}"


def test_model_health_and_readiness(server: Server) -> None:
    with server.client() as client:
        model = client.get("/api/model").json()
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
    assert model["name"] == "open_nsfw"
    assert model["input_shape"] == [3, 224, 224]
    assert model["classes"] == 2
    assert model["devices"] == ["cpu"]
    assert model["batching"]["max_queue_delay_ms"] == 20
    assert ready.status_code == 200
    assert ready.json()["replicas"] == {"ready": 1, "total": 1}


def jpeg_bomb() -> bytes:
    data = bytearray(shared("images/cat.jpg").read_bytes())
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, 65500, 65500)
    return bytes(data)


def encoded(ext: str) -> bytes:
    image = shared_image("images/cat.jpg")
    return bytes(cv2.imencode(ext, image)[1].tobytes())


ERRORS = [
    ("empty", b"", "", 400, "bad_image"),
    ("one byte", b"\xff", "", 400, "bad_image"),
    ("html", b"<html><body>cat</body></html>", "", 400, "bad_image"),
    ("truncated jpeg", None, "", 400, "bad_image"),
    ("gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "", 415, "unsupported_format"),
    ("svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>', "", 415, "unsupported_format"),
    ("bomb", None, "", 413, "too_large"),
    ("top_k above classes", None, "?top_k=3", 422, "bad_top_k"),
    ("top_k with an underscore", None, "?top_k=1_0", 422, "bad_top_k"),
    ("top_k in non-ascii digits", None, "?top_k=%D9%A1", 422, "bad_top_k"),
]


@pytest.mark.parametrize(
    ("name", "body", "query", "status", "code"), ERRORS, ids=[e[0] for e in ERRORS]
)
def test_errors_are_json_and_the_server_keeps_serving(
    server: Server, name: str, body: bytes | None, query: str, status: int, code: str
) -> None:
    cat = shared("images/cat.jpg").read_bytes()
    if body is None:
        body = {"truncated jpeg": cat[:300], "bomb": jpeg_bomb()}.get(name, cat)
    with server.client() as client:
        response = client.post(f"/api/classify{query}", content=body)
        assert response.status_code == status, response.text
        assert response.json()["error"] == code
        assert response.json()["message"]
        assert client.post("/api/classify", content=cat).status_code == 200


def test_other_formats_decode(server: Server) -> None:
    with server.client() as client:
        for ext in (".png", ".bmp", ".webp"):
            response = client.post("/api/classify", content=encoded(ext))
            assert response.status_code == 200, (ext, response.text)


def test_log_stays_json_lines_when_decoders_complain(server: Server) -> None:
    """libjpeg and libpng print warnings to the replica's stderr; gre logs them as JSON."""
    png = bytearray(encoded(".png"))
    idat = png.find(b"IDAT")
    png[idat + 40 : idat + 60] = bytes(20)  # zlib data (and CRC) no longer check
    jpeg = shared("images/cat.jpg").read_bytes()
    with server.client() as client:
        for body in (bytes(png), jpeg[: len(jpeg) // 2]):
            assert client.post("/api/classify", content=body).status_code in (200, 400)
        assert client.post("/api/classify", content=jpeg).status_code == 200
    records = [json.loads(line) for line in server.output().splitlines()]
    assert all(isinstance(r, dict) and "level" in r for r in records)
    replica_lines = [r for r in records if r["logger"] == "gre.replica"]
    assert replica_lines, "the decoders' complaints were expected in the log"
    assert all(r["replica"] == "0@cpu" for r in replica_lines)


def test_body_over_the_limit_is_refused(server: Server) -> None:
    big = b"\xff\xd8\xff" + bytes(MAX_BODY)
    with server.client() as client:
        response = client.post("/api/classify", content=big)
        assert response.status_code == 413
        assert response.json()["error"] == "too_large"
        # Chunked, with no Content-Length: refused while streaming.
        chunked = client.post("/api/classify", content=iter([big[:1024], big[1024:]]))
        assert chunked.status_code == 413
        assert client.get("/healthz").status_code == 200


def test_declared_length_over_limit_is_refused_before_the_body(server: Server) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /api/classify HTTP/1.1\r\nHost: x\r\n"
            + f"Content-Length: {MAX_BODY * 10}\r\n\r\n".encode()
            + b"\xff\xd8\xff"
        )
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 413")


def test_unknown_path_and_wrong_method(server: Server) -> None:
    with server.client() as client:
        missing = client.get("/api/nothing")
        wrong = client.get("/api/classify")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    assert (wrong.status_code, wrong.json()["error"]) == (405, "method_not_allowed")


@pytest.mark.parametrize("workers", [1, 2])
async def test_overload_gives_503_with_retry_after(tmp_path: Path, workers: int) -> None:
    cat = shared("images/cat.jpg").read_bytes()
    settings = (
        "--set",
        "max_queue_size=2",
        "--set",
        "max_batch_size=1",
        "--set",
        f"workers={workers}",
    )
    with running_server(tmp_path, *settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            burst = await asyncio.gather(
                *(client.post("/api/classify", content=cat) for _ in range(24))
            )
            statuses = [r.status_code for r in burst]
            assert set(statuses) <= {200, 503}
            refused = [r for r in burst if r.status_code == 503]
            assert refused, "a queue of 2 took 24 concurrent requests without refusing one"
            assert all(r.headers["retry-after"] == "1" for r in refused)
            assert all(r.json()["error"] == "queue_full" for r in refused)
            assert (await client.post("/api/classify", content=cat)).status_code == 200


@contextmanager
def replica_stopped(server: Server) -> Iterator[None]:
    """SIGSTOP the only replica (alive, answering nothing) for the block; SIGCONT after."""
    with server.client() as client:
        pid = int(client.get("/api/model").json()["replicas"][0]["pid"])
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


STOPPABLE = ("--set", "max_batch_size=1", "--set", "replica_timeout_ms=300000")


async def test_deadline_while_queued_is_504(tmp_path: Path) -> None:
    cat = shared("images/cat.jpg").read_bytes()
    with running_server(tmp_path, *STOPPABLE) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            with replica_stopped(server):
                busy = asyncio.ensure_future(client.post("/api/classify", content=cat))
                await asyncio.sleep(0.3)  # dispatched to the stopped replica; the queue is empty
                headers = {"X-Request-Timeout-Ms": "200"}
                late = await client.post("/api/classify", content=cat, headers=headers)
            assert (await busy).status_code == 200
        assert late.status_code == 504
        assert late.json() == {
            "error": "deadline_exceeded",
            "message": "deadline passed while queued",
        }


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_full_queue_refuses_before_reading_the_body(tmp_path: Path, workers: int) -> None:
    cat = shared("images/cat.jpg").read_bytes()
    settings = (*STOPPABLE, "--set", "max_queue_size=1", "--set", f"workers={workers}")
    with running_server(tmp_path, *settings) as server:
        host, port = server.url.removeprefix("http://").split(":")
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            with replica_stopped(server):
                first = asyncio.ensure_future(client.post("/api/classify", content=cat))
                await asyncio.sleep(0.3)  # in flight on the stopped replica
                queued = asyncio.ensure_future(client.post("/api/classify", content=cat))
                await asyncio.sleep(0.3)  # fills the queue of one
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(  # a head announcing 1 MB that never comes
                    b"POST /api/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
                )
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                body = await asyncio.wait_for(reader.readuntil(b"}"), 10)
                writer.close()
            assert [r.status_code for r in await asyncio.gather(first, queued)] == [200, 200]
    assert head.startswith(b"HTTP/1.1 503"), head
    assert b"retry-after: 1" in head.lower()
    assert json.loads(body)["error"] == "queue_full"


@pytest.mark.parametrize("workers", [1, 2])
async def test_disconnected_client_is_dropped_from_the_queue(tmp_path: Path, workers: int) -> None:
    cat = shared("images/cat.jpg").read_bytes()
    settings = (
        "--set",
        "max_batch_size=1",
        "--set",
        "max_queue_size=64",
        "--set",
        f"workers={workers}",
    )
    with running_server(tmp_path, *settings) as server:
        host, port = server.url.removeprefix("http://").split(":")
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            busy = [
                asyncio.ensure_future(client.post("/api/classify", content=cat)) for _ in range(8)
            ]

            async def until_accounted(count: int) -> None:
                """Until ``count`` requests are queued, running or answered."""
                for _ in range(600):
                    queue = (await client.get("/api/model")).json()["queue"]
                    done = sum(f.done() for f in busy)
                    if queue["waiting"] + queue["in_flight"] + done >= count:
                        return
                    await asyncio.sleep(0.01)
                pytest.fail(f"never {count} requests queued: {queue}")

            await until_accounted(8)  # the eight are queued ahead (not a guess on a busy box)
            _, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                b"POST /api/classify HTTP/1.1\r\nHost: x\r\n"
                + f"Content-Length: {len(cat)}\r\n\r\n".encode()
                + cat
            )
            await writer.drain()
            await until_accounted(9)
            assert sum(f.done() for f in busy) < 7, "the eight were answered too soon to test"
            writer.close()  # gone while queued behind the eight
            assert [r.status_code for r in await asyncio.gather(*busy)] == [200] * 8
            await asyncio.sleep(0.5)
            served = (await client.get("/api/model")).json()["batches_by_size"]
        assert served == {"1": 8}, f"the disconnected request was dispatched: {served}"
