"""``POST /api/features`` through a real ``gre serve`` on 127.0.0.1, with real photos and
open_nsfw: the blobs equal the engine's called in this process, bad blob names are 422
``bad_blob`` naming the valid ones, and features and classify requests share batches."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from gre.config import load_config
from gre.messages import Prediction
from gre.model.classifier import Classifier
from gre.offline import build_classifier
from tests.support import Server, distinct_jpegs, photo_paths, running_server

# A wide batching window so that concurrent requests meet in one batch on 2 busy cores.
SETTINGS = ("--set", "max_queue_delay_ms=200", "--set", "timeout_ms=300000")
BLOBS = ("pool", "fc_nsfw", "conv_1")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("features"), *SETTINGS) as server:
        yield server


@pytest.fixture(scope="module")
def direct() -> Iterator[Classifier]:
    classifier = build_classifier(load_config(None, {}))
    yield classifier
    classifier.close()


def direct_blobs(classifier: Classifier, data: bytes, blobs: tuple[str, ...]) -> Prediction:
    outcome = classifier.classify([data], [0], [blobs]).outcomes[0]
    assert isinstance(outcome, Prediction)
    return outcome


def query(*blobs: str) -> str:
    return "/api/features?" + "&".join(f"blob={b}" for b in blobs)


@pytest.mark.parametrize("path", photo_paths(), ids=lambda p: p.name)
def test_blobs_equal_the_engines_called_directly(
    server: Server, direct: Classifier, path: Path
) -> None:
    data = path.read_bytes()
    with server.client() as client:
        response = client.post(query(*BLOBS), content=data)
    assert response.status_code == 200, response.text
    assert re.fullmatch(r"queue;dur=.*inference;dur=[0-9.]+", response.headers["server-timing"])
    answer = response.json()
    assert list(answer) == list(BLOBS)
    expected = direct_blobs(direct, data, BLOBS)
    for blob in BLOBS:
        got = np.asarray(answer[blob], dtype=np.float32)
        want = expected.features[blob]
        assert got.shape == want.shape, blob
        scale = max(1.0, float(np.abs(want).max()))
        assert float(np.abs(got - want).max()) <= 1e-4 * scale, blob
    assert len(answer["fc_nsfw"]) == 2


def test_api_model_lists_every_blob_with_its_shape(server: Server) -> None:
    with server.client() as client:
        blobs = client.get("/api/model").json()["blobs"]
    shapes = {b["name"]: b["shape"] for b in blobs}
    assert blobs[0] == {"name": "data", "shape": [3, 224, 224]}
    assert shapes["fc_nsfw"] == [2]
    assert shapes["prob"] == [2]
    assert all(isinstance(s, list) and all(d >= 1 for d in s) for s in shapes.values())
    with server.client() as client:
        answer = client.post(query("pool"), content=distinct_jpegs(1)[0]).json()
    assert len(answer["pool"]) == int(np.prod(shapes["pool"]))


@pytest.mark.parametrize(
    ("path", "named"),
    [(query("fc7"), "'fc7'"), (query("pool", "nope"), "'nope'"), ("/api/features", "at least")],
)
def test_a_blob_the_net_lacks_is_422_naming_the_valid_ones(
    server: Server, path: str, named: str
) -> None:
    with server.client() as client:
        response = client.post(path, content=distinct_jpegs(1)[0])
        assert response.status_code == 422
        body = response.json()
        assert body["error"] == "bad_blob"
        assert named in body["message"]
        assert "fc_nsfw" in body["message"]
        assert response.headers["x-request-id"]
        again = client.post(query("prob"), content=distinct_jpegs(1)[0])  # still serving
        assert again.status_code == 200
        assert len(again.json()["prob"]) == 2


def test_a_bad_image_is_400_as_for_classify(server: Server) -> None:
    with server.client() as client:
        response = client.post(query("pool"), content=b"not an image")
    assert response.status_code == 400
    assert response.json()["error"] == "bad_image"


async def test_features_and_classify_requests_share_batches(
    server: Server, direct: Classifier
) -> None:
    images = distinct_jpegs(16)
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        before = (await client.get("/api/model")).json()["batches_by_size"]
        responses = await asyncio.gather(
            *(
                client.post(query("fc_nsfw") if i % 2 else "/api/classify?top_k=2", content=data)
                for i, data in enumerate(images)
            )
        )
        after = (await client.get("/api/model")).json()["batches_by_size"]
        metrics = (await client.get("/metrics")).text
    for i, (response, data) in enumerate(zip(responses, images, strict=True)):
        assert response.status_code == 200, response.text
        if i % 2:
            want = direct_blobs(direct, data, ("fc_nsfw",)).features["fc_nsfw"]
            np.testing.assert_allclose(response.json()["fc_nsfw"], want, rtol=0, atol=1e-4)
        else:
            assert len(response.json()) == 2
    new = {int(k): v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
    assert sum(size * count for size, count in new.items()) == 16
    assert max(new) > 1, f"no batch larger than 1 was formed: {new}"
    counted = re.search(r'^gre_features_blobs_total\{blob="fc_nsfw"\} ([0-9.]+)$', metrics, re.M)
    assert counted is not None
    assert float(counted.group(1)) >= 8
