"""The peers (benchmarks/peers): real servers on 127.0.0.1, real photos, open_nsfw.

The naive peer runs in gre's own ``.venv`` and is always tested. BentoML, Ray Serve and Triton
need venvs of their own (about 1.6 GB in ~/.cache/gre/peers, a minute or two each to build on
first use; Triton's from Debian's /usr/bin/python3.11): their tests run on demand, with ``make
peers-test`` (``GRE_PEERS=all``) or ``GRE_PEERS=triton`` (a comma-separated list); otherwise one
test per such peer is reported as skipped, naming that command.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import ipaddress
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from benchmarks.peers import (
    PEER_NAMES,
    PeerSetupError,
    ensure_venv,
    peer_versions,
    running_peer,
    venvs,
)
from benchmarks.peers.launch import classifies, probe_image, processes_of
from benchmarks.peers.venvs import MARKER, cache_dir
from benchmarks.report import write_report
from gre.config import load_config
from gre.messages import Prediction
from gre.model.classifier import Classifier
from gre.model.imaging import check_image, decode_bgr
from gre.model.labels import answer
from gre.offline import build_classifier
from tests.benchmarks.test_report import comparison as report_comparison
from tests.benchmarks.test_results import step
from tests.support import distinct_jpegs, free_port, shared

LABELS = ["sfw", "nsfw"]
#: Peers that need a venv of their own: tested when GRE_PEERS names them (or is "all").
ON_DEMAND = ("bentoml", "rayserve", "triton")


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
    """A running peer's base URL; after its tests, checks it left no process behind. Triton's
    sockets are checked too: tritonserver binds all interfaces unless told otherwise, and
    here its HTTP, gRPC and metrics ports, like the front, must be on 127.0.0.1 only."""
    name: str = request.param
    port = free_port()
    with running_peer(name, port=port) as url:
        run_dirs = {run_dir for run_dir in _run_dirs() if f"gre-peer-{name}-" in run_dir}
        assert run_dirs, "the peer's processes do not carry GRE_PEER_RUN"
        if name == "triton":
            (run_dir,) = run_dirs
            addresses = _listening(processes_of(run_dir))
            assert len(addresses) >= 4, addresses  # the front, Triton's HTTP, gRPC, metrics
            assert set(addresses) == {ipaddress.IPv4Address("127.0.0.1")}, addresses
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
    framework = {
        "naive": "starlette",
        "bentoml": "bentoml",
        "rayserve": "ray",
        "triton": "nvidia-pytriton",
    }[name]
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
    with (
        pytest.raises(ValueError, match="unknown peer 'torchserve'"),
        running_peer("torchserve", port=1),
    ):
        pass


def test_a_peer_whose_interpreter_is_missing_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GRE_CACHE_DIR", str(tmp_path))
    missing = tmp_path / "python3.11"
    monkeypatch.setitem(venvs.INTERPRETERS, "triton", (missing, "apt-get install python3.11"))
    with pytest.raises(PeerSetupError, match=r"python3\.11, which is missing: `apt-get install"):
        ensure_venv("triton")
    assert not list(tmp_path.iterdir()), "nothing is built without the interpreter"


def test_triton_venv_is_debians_python_with_gres_pipeline_packages() -> None:
    python, install = venvs.INTERPRETERS["triton"]
    assert python == Path("/usr/bin/python3.11")
    assert "python3.11-venv" in install
    (site,) = venvs.pipeline_path("triton")
    assert site == str(venvs.venv_dir("triton") / venvs.PIPELINE_SITE)
    assert venvs.pipeline_path("bentoml") == []
    pins = dict(
        line.split("==")
        for line in venvs.PEERS_DIR.joinpath("triton", venvs.PIPELINE_REQUIREMENTS)
        .read_text()
        .splitlines()
        if line and not line.startswith("#")
    )
    for package, version in pins.items():
        assert version == importlib.metadata.version(package), package


def _listening(pids: list[int]) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The local IP addresses of the TCP sockets that ``pids`` listen on (from /proc)."""
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):  # the process may be gone
            for fd in list(Path(f"/proc/{pid}/fd").iterdir()):
                with contextlib.suppress(OSError):  # and so may the descriptor
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for table, width in (("tcp", 4), ("tcp6", 16)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(fields[1].split(":")[0])
            # /proc writes each 32-bit word of the address in host (little-endian) order.
            address = ipaddress.ip_address(
                b"".join(raw[i : i + 4][::-1] for i in range(0, width, 4))
            )
            mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
            found.append(mapped or address)
    return found


def test_the_report_says_where_gre_is_behind_triton_and_what_the_figures_say_why(
    tmp_path: Path,
) -> None:
    """Made-up figures (tests/benchmarks/test_report.py's), the peer renamed ``triton``."""
    made = report_comparison([step(1, 30.0), step(32, 150.0, mean_batch_size=20.0)], [])
    made.servers = ["gre", "triton"]
    made.runs["triton"] = made.runs.pop("peer")
    made.server_versions["triton"] = made.server_versions.pop("peer")
    text = write_report(made, tmp_path).read_text()
    assert "- Saturation throughput vs triton: 0.80\u00d7 (target 1.3\u00d7)" in text
    assert "- `triton` is NVIDIA Triton" in text  # what its figures include: the front's hop
    assert (
        "- Batching: at their best steps Triton's batcher formed larger batches than gre's "
        "scheduler: mean 20.0 images per forward at concurrency 32, gre 9.5 at 16."
    ) in text
    assert "- Overhead: Triton's own cost per request is the lower (null engine: gre 900.0" in text
    made.runs["triton"]["closed"].steps = [step(16, 50.0)]  # gre ahead: nothing said of Triton
    made.runs["triton"].pop("null")
    assert "from these figures" not in write_report(made, tmp_path).read_text()
