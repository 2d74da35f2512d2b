"""/metrics after real traffic: the counts add up."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gre.metrics import LATENCY_BUCKETS, Metrics, batch_size_buckets
from tests.support import Server, distinct_jpegs, running_server, shared


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    settings = ("--set", "max_queue_delay_ms=20", "--set", "timeout_ms=300000")
    with running_server(tmp_path_factory.mktemp("metrics"), *settings) as server:
        yield server


def scrape(server: Server) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


async def test_counts_add_up_after_real_traffic(server: Server) -> None:
    images = distinct_jpegs(20)
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        ok = await asyncio.gather(*(client.post("/api/classify", content=i) for i in images))
        bad = [await client.post("/api/classify", content=b"junk") for _ in range(3)]
        gif = await client.post("/api/classify", content=b"GIF89a" + bytes(20))
        top_k = await client.post("/api/classify?top_k=0", content=images[0])
    assert [r.status_code for r in ok] == [200] * 20
    assert [r.status_code for r in bad] == [400] * 3
    assert (gif.status_code, top_k.status_code) == (415, 422)
    m = scrape(server)
    assert m["gre_requests_total"] == {
        (("code", "200"),): 20.0,
        (("code", "400"),): 3.0,
        (("code", "415"),): 1.0,
        (("code", "422"),): 1.0,
    }
    assert m["gre_request_duration_seconds_count"][()] == 25
    assert m["gre_queue_duration_seconds_count"][()] == 20
    assert m["gre_batch_size_sum"][()] == 20  # batch sizes sum to the images served
    batches = m["gre_batch_size_count"][()]
    assert m["gre_preprocess_duration_seconds_count"][()] == batches
    inference = m["gre_inference_duration_seconds_count"]
    assert inference == {(("device", "cpu"), ("replica", "0@cpu")): batches}
    assert m["gre_rejected_total"] == {
        (("reason", "bad_image"),): 3.0,
        (("reason", "unsupported_format"),): 1.0,
        (("reason", "bad_top_k"),): 1.0,
    }
    assert m["gre_queue_depth"][()] == 0
    assert m["gre_replicas"][(("state", "ready"),)] == 1
    assert m["gre_replicas"][(("state", "dead"),)] == 0
    assert m["gre_replica_restarts_total"][()] == 0
    # No GPU on this machine: the GPU metrics are absent, not zero.
    assert not any(name.startswith("gre_gpu_") for name in m)


def test_buckets() -> None:
    assert batch_size_buckets(4) == [1.0, 2.0, 3.0, 4.0]
    assert batch_size_buckets(100) == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 100.0]
    assert LATENCY_BUCKETS[0] < 0.001  # a low-latency service: sub-millisecond to seconds
    assert LATENCY_BUCKETS[-1] >= 10


def test_one_json_log_line_per_request_with_its_id(server: Server) -> None:
    cat = shared("images/cat.jpg").read_bytes()
    with server.client() as client:
        response = client.post("/api/classify", content=cat, headers={"X-Request-Id": "req-42"})
        failed = client.post("/api/classify", content=b"")
    assert response.headers["x-request-id"] == "req-42"
    generated = failed.headers["x-request-id"]
    assert len(generated) == 32
    lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    mine = [line for line in lines if line.get("request_id") == "req-42"]
    assert len(mine) == 1
    entry = mine[0]
    assert entry["logger"] == "gre.access"
    assert entry["status"] == 200
    assert entry["bytes"] == len(cat)
    assert entry["image"] == "480x360"
    assert entry["batch_size"] >= 1
    assert entry["replica"] == "0@cpu"
    assert all(entry[k] >= 0 for k in ("queue_ms", "preprocess_ms", "inference_ms"))
    # Logged to the µs: rounded as the line is written.
    durations = ("queue_ms", "preprocess_ms", "inference_ms", "duration_ms")
    assert all(round(entry[k], 3) == entry[k] for k in durations)
    error = [line for line in lines if line.get("request_id") == generated]
    assert len(error) == 1
    assert error[0]["level"] == "WARNING"
    assert error[0]["error"] == "bad_image"
    assert "empty" in error[0]["reason"]
    assert any("serving open_nsfw" in line["message"] for line in lines)
    assert not any(line["logger"] == "uvicorn.access" for line in lines)


def test_metrics_endpoint_is_prometheus_text(server: Server) -> None:
    response = httpx.get(f"{server.url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")


def test_answered_counts_each_status_in_its_own_series() -> None:
    metrics = Metrics(4)
    for status in (200, 200, 503, 200):
        metrics.answered(status)
    text = metrics.render().decode()
    assert 'gre_requests_total{code="200"} 3.0' in text
    assert 'gre_requests_total{code="503"} 1.0' in text
