"""The peers (benchmarks/peers): real servers on 127.0.0.1, real photos, open_nsfw.

The naive peer runs in gre's own ``.venv`` and is always tested. BentoML and Ray Serve need
venvs of their own (about 1 GB in ~/.cache/gre/peers, a minute or two to build on first use):
their tests run on demand, with ``make peers-test`` (``GRE_PEERS=all``); otherwise one test per
such peer is reported as skipped, naming that command.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from benchmarks.peers import PEER_NAMES, ensure_venv, peer_versions, running_peer
from benchmarks.peers.launch import classifies, probe_image, processes_of
from benchmarks.peers.venvs import MARKER, cache_dir
from gre.config import load_config
from gre.messages import Prediction
from gre.model.classifier import Classifier
from gre.model.imaging import check_image, decode_bgr
from gre.model.labels import answer
from gre.offline import build_classifier
from tests.support import distinct_jpegs, free_port, shared

LABELS = ["sfw", "nsfw"]
#: Peers that need a venv of their own: tested when GRE_PEERS names them (or is "all").
ON_DEMAND = ("bentoml", "rayserve")


def wanted(name: str) -> bool:
    chosen = os.environ.get("GRE_PEERS", "")
    return name not in ON_DEMAND or chosen == "all" or name in chosen.split(",")


UNDER_TEST = [name for name in PEER_NAMES if wanted(name)]


@pytest.mark.parametrize("name", ON_DEMAND)
def test_on_demand_peer_venv_builds(name: str) -> None:
    if not wanted(name):
        pytest.skip(f"the {name} peer is tested on demand: `make peers-test` (GRE_PEERS=all)")
    venv = ensure_venv(name)
    assert (venv / "bin" / "python").exists()
    assert venv.parent == cache_dir()
    assert venv.name.startswith(f"{name}-")
    assert json.loads((venv / MARKER).read_text())["install_seconds"] > 0


@pytest.fixture(scope="module", params=UNDER_TEST)
def peer(request: pytest.FixtureRequest) -> Iterator[str]:
    """A running peer's base URL; after its tests, checks it left no process behind."""
    name: str = request.param
    port = free_port()
    with running_peer(name, port=port) as url:
        run_dirs = {run_dir for run_dir in _run_dirs() if f"gre-peer-{name}-" in run_dir}
        assert run_dirs, "the peer's processes do not carry GRE_PEER_RUN"
        yield url
    assert classifies(url) is None, f"{name} still answers at {url} after it was stopped"
    for run_dir in run_dirs:
        assert not processes_of(run_dir), f"{name} left processes running: {run_dir}"


def _run_dirs() -> set[str]:
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        found |= {
            v.decode().removeprefix("GRE_PEER_RUN=") for v in environ if v.startswith(b"GRE_PEER")
        }
    return found


@pytest.fixture(scope="module")
def direct() -> Iterator[Classifier]:
    """gre's classifier in this process: one image per forward."""
    classifier = build_classifier(load_config(None, {}))
    yield classifier
    classifier.close()


def direct_prediction(classifier: Classifier, data: bytes, k: int = 2) -> Prediction:
    outcome = classifier.classify([data], [k]).outcomes[0]
    assert isinstance(outcome, Prediction)
    return outcome


def test_a_photo_gets_exactly_gres_answer(peer: str, direct: Classifier) -> None:
    for name in ("cat.jpg", "fish-bike.jpg", "cat_gray.jpg"):
        data = shared(f"images/{name}").read_bytes()
        response = httpx.post(f"{peer}/api/classify", content=data, timeout=60)
        assert response.status_code == 200, response.text
        assert response.json() == answer(direct_prediction(direct, data), LABELS), name
    response = httpx.post(f"{peer}/api/classify?top_k=1", content=data, timeout=60)
    assert response.json() == answer(direct_prediction(direct, data, 1), LABELS)


@pytest.mark.parametrize(
    ("body", "query", "status", "code"),
    [
        (b"", "", 400, "bad_image"),
        (b"<html>cat</html>", "", 400, "bad_image"),
        (b"truncated", "", 400, "bad_image"),  # a JPEG header that does not decode
        (b"GIF89a\x01\x00\x01\x00\x00\x00\x00", "", 415, "unsupported_format"),
        (b"cat", "?top_k=0", 422, "bad_top_k"),
        (b"cat", "?top_k=x", 422, "bad_top_k"),
    ],
)
def test_refusals_are_gres(peer: str, body: bytes, query: str, status: int, code: str) -> None:
    cat = shared("images/cat.jpg").read_bytes()
    body = {b"cat": cat, b"truncated": cat[:300]}.get(body, body)
    response = httpx.post(f"{peer}/api/classify{query}", content=body, timeout=60)
    assert response.status_code == status, response.text
    assert response.json()["error"] == code
    assert response.json()["message"]


async def test_concurrent_photos_get_their_own_answers_and_batching_is_the_peers(
    peer: str, direct: Classifier
) -> None:
    images = distinct_jpegs(48)
    expected = [direct_prediction(direct, data) for data in images]
    async with httpx.AsyncClient(base_url=peer, timeout=120) as client:
        before = (await client.get("/api/model")).json()
        responses = await asyncio.gather(
            *(client.post("/api/classify", content=data) for data in images)
        )
        after = (await client.get("/api/model")).json()
    for response, want in zip(responses, expected, strict=True):
        assert response.status_code == 200, response.text
        got = response.json()
        # A batched forward may round differently from a forward of one image.
        assert [a["label"] for a in got] == [LABELS[i] for i in want.indices]
        np.testing.assert_allclose([a["confidence"] for a in got], want.confidences, atol=1e-5)
    old = before["batches_by_size"]
    new = {int(k): n - old.get(k, 0) for k, n in after["batches_by_size"].items()}
    new = {size: n for size, n in new.items() if n}
    assert sum(size * n for size, n in new.items()) == len(images)
    if after["peer"] == "naive":
        assert set(new) == {1}
    else:
        assert max(new) > 1, f"{after['peer']} formed no batch larger than 1: {new}"


def test_versions_are_reported(peer: str) -> None:
    name = httpx.get(f"{peer}/api/model").json()["peer"]
    versions = peer_versions(name)
    framework = {"naive": "starlette", "bentoml": "bentoml", "rayserve": "ray"}[name]
    assert versions[framework]
    # The pipeline's own packages are gre's, so that only the framework differs.
    for package in ("numpy", "opencv-python-headless"):
        assert versions[package] == importlib.metadata.version(package)


@pytest.mark.parametrize("name", UNDER_TEST)
def test_null_engine_answers_fixed_probabilities(name: str) -> None:
    with running_peer(name, port=free_port(), engine="null") as url:
        response = httpx.post(
            f"{url}/api/classify", content=shared("images/cat.jpg").read_bytes(), timeout=60
        )
        model = httpx.get(f"{url}/api/model").json()
    assert response.status_code == 200, response.text
    assert model["engine"] == "null"
    assert [a["label"] for a in response.json()] == LABELS
    # The null engine's row: class i gets weight K - i.
    assert [a["confidence"] for a in response.json()] == pytest.approx([2 / 3, 1 / 3])


def test_probe_image_is_a_bmp_gre_decodes() -> None:
    data = probe_image()
    info = check_image(data, 100)
    assert (info.format, info.width, info.height) == ("bmp", 8, 8)
    pixels = decode_bgr(data)
    assert pixels.shape == (8, 8, 3)
    assert (pixels == 128).all()


def test_unknown_peer_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown peer 'triton'"), running_peer("triton", port=1):
        pass
