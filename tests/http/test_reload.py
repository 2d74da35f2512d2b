"""Model reload under load, through a real server, real replica processes and real models:
open_nsfw (real weights) to SqueezeNet 1.1 (seeded random weights, tests' zoo) by SIGHUP, and
to a broken caffemodel by ``POST /admin/reload``. Nothing is dropped, nothing is 5xx, and
each answer comes whole from one model."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.zoo import zoo_weights
from gre.http.admin import client_allowed
from tests.support import Server, running_server, shared

LOAD = 200
OPEN_NSFW_LABELS = {"sfw", "nsfw"}
#: Room for the whole load in the queue and within its deadline on 2 CPU cores.
COMMON = """
[batching]
max_batch_size = 8
max_queue_size = 400
timeout_ms = 120000.0

[server]
admin_reload = true
"""


def open_nsfw() -> str:
    return '[model]\nengine = "opencv"\n' + COMMON


def squeezenet() -> str:
    deploy = shared("models/squeezenet_v1.1/deploy.prototxt")
    weights = zoo_weights(deploy, "squeezenet_v1.1")
    synsets = shared("data/ilsvrc12/synset_words.txt")
    return f"""
[model]
name = "squeezenet_v1.1"
deploy = "{deploy}"
weights = "{weights}"
synset_words = "{synsets}"
engine = "opencv"
{COMMON}"""


def broken_open_nsfw(tmp_path: Path) -> str:
    weights = tmp_path / "broken.caffemodel"
    weights.write_bytes(b"\x0a\x05not a caffemodel" * 64)
    return f'[model]\nengine = "opencv"\nweights = "{weights}"\n' + COMMON


def describe(server: Server) -> dict[str, Any]:
    return dict(httpx.get(f"{server.url}/api/model", timeout=10).json())


async def load(server: Server, count: int, answered: list[int]) -> list[tuple[int, Any]]:
    """POST ``count`` cat photos at once; (status, JSON body) of each; ``answered`` counts."""
    cat = shared("images/cat.jpg").read_bytes()

    async def one(client: httpx.AsyncClient) -> tuple[int, Any]:
        response = await client.post("/api/classify", content=cat)
        answered.append(response.status_code)
        return response.status_code, response.json()

    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(base_url=server.url, timeout=180, limits=limits) as client:
        return list(await asyncio.gather(*(one(client) for _ in range(count))))


async def when_answered(answered: list[int], count: int) -> None:
    end = time.monotonic() + 120
    while len(answered) < count:
        if time.monotonic() > end:
            pytest.fail(f"only {len(answered)} requests answered")
        await asyncio.sleep(0.05)


def model_of(body: list[dict[str, Any]], synsets: set[str]) -> str:
    """Which model answered: every label from one model's labels, else a failure."""
    labels = {row["label"] for row in body}
    if labels <= OPEN_NSFW_LABELS:
        return "open_nsfw"
    if labels <= synsets:
        return "squeezenet"
    pytest.fail(f"labels from neither model, or from both: {labels}")


def wait_for_generation(server: Server, generation: int) -> dict[str, Any]:
    end = time.monotonic() + 120
    while time.monotonic() < end:
        described = describe(server)
        if described["version"]["generation"] == generation:
            return described
        time.sleep(0.1)
    pytest.fail(f"generation {generation} never served:\n{server.output()}")


@pytest.mark.parametrize("workers", [1, 2])
async def test_sighup_reloads_a_new_model_under_load(tmp_path: Path, workers: int) -> None:
    """With ``workers = 2`` the answers' labels cross to the HTTP workers, once per model
    (gre.http.bridge_answers): each worker answers each model's with that model's."""
    config = tmp_path / "gre.toml"
    config.write_text(open_nsfw())
    synsets = set(shared("data/ilsvrc12/synset_words.txt").read_text().splitlines())
    settings = ("--config", str(config), "--set", f"workers={workers}")
    with running_server(tmp_path, *settings) as server:
        before = describe(server)
        answered: list[int] = []
        flood = asyncio.ensure_future(load(server, LOAD, answered))
        await when_answered(answered, 10)
        config.write_text(squeezenet())
        os.kill(server.process.pid, signal.SIGHUP)
        results = await flood
        assert [status for status, _ in results] == [200] * LOAD, server.output()
        models = [model_of(body, synsets) for _, body in results]
        print("answers by model during the reload:", {m: models.count(m) for m in set(models)})
        assert "open_nsfw" in models  # answered before and during the reload ...
        after = wait_for_generation(server, 2)
        assert after["name"] == "squeezenet_v1.1"
        assert after["classes"] == 1000
        assert after["version"]["digest"] != before["version"]["digest"]
        assert [r["name"] for r in after["replicas"]] == ["0@cpu#2"]
        # ... and after it only the new model answers.
        again = await load(server, 20, [])
        assert {model_of(body, synsets) for _, body in again} == {"squeezenet"}
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'gre_reloads_total{outcome="ok"} 1.0' in metrics
        assert 'gre_model_info{name="squeezenet_v1.1"' in metrics
        assert "reloaded:" in server.output()


async def test_a_broken_caffemodel_under_load_leaves_the_old_model_serving(
    tmp_path: Path,
) -> None:
    config = tmp_path / "gre.toml"
    config.write_text(open_nsfw())
    with running_server(tmp_path, "--config", str(config)) as server:
        before = describe(server)
        answered: list[int] = []
        flood = asyncio.ensure_future(load(server, LOAD, answered))
        await when_answered(answered, 10)
        config.write_text(broken_open_nsfw(tmp_path))
        async with httpx.AsyncClient(base_url=server.url, timeout=180) as client:
            reload = await client.post("/admin/reload")
        assert reload.status_code == 422, reload.text
        assert reload.json()["error"] == "reload_failed"
        assert "failed to start" in reload.json()["message"]
        results = await flood
        assert [status for status, _ in results] == [200] * LOAD, server.output()
        assert {model_of(body, set()) for _, body in results} == {"open_nsfw"}
        after = describe(server)
        assert after["version"] == before["version"]
        assert after["reload"]["last_error"] == reload.json()["message"]
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'gre_reloads_total{outcome="failed"} 1.0' in metrics


def test_admin_reload_is_off_by_default_and_only_for_admin_clients(tmp_path: Path) -> None:
    with running_server(tmp_path, "--engine", "null") as server, server.client() as client:
        off = client.post("/admin/reload")
        assert (off.status_code, off.json()["error"]) == (404, "not_found")
    args = ("--engine", "null", "--set", "admin_reload=true")
    with (
        running_server(tmp_path, *args, "--set", 'admin_clients=["10.0.0.0/8"]') as server,
        server.client() as client,
    ):
        refused = client.post("/admin/reload")
        assert (refused.status_code, refused.json()["error"]) == (403, "forbidden")
        assert "127.0.0.1" in refused.json()["message"]


@pytest.mark.parametrize(
    ("host", "allowed", "expected"),
    [
        ("127.0.0.1", ["127.0.0.1", "::1"], True),
        ("::1", ["127.0.0.1", "::1"], True),
        ("::ffff:127.0.0.1", ["127.0.0.1"], True),
        ("10.1.2.3", ["10.0.0.0/8"], True),
        ("192.168.0.1", ["127.0.0.1", "::1"], False),
        ("not-an-ip", ["0.0.0.0/0"], False),
        (None, ["0.0.0.0/0"], False),
    ],
)
def test_client_allowed(host: str | None, allowed: list[str], expected: bool) -> None:
    assert client_allowed(host, allowed) is expected


def test_the_unit_reloads_by_sighup() -> None:
    unit = (Path(__file__).parents[2] / "systemd" / "gre.service").read_text()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit, "systemctl reload gre must SIGHUP gre"
