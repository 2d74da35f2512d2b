"""The classify handler in-process: Starlette's TestClient over a real Service, Scheduler and
replica pool, with fake replicas (tests/fakes.py) instead of processes. The end-to-end tests
with a real server and real photos are tests/http/test_app.py."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.types import Message

from gre.batching.errors import ReplicaBatchError
from gre.config import load_config
from gre.http.app import create_app
from gre.messages import ItemError
from gre.service import Service
from tests.fakes import FakeReplica
from tests.support import shared


@contextmanager
def serving(**settings: Any) -> Iterator[tuple[TestClient, Service, FakeReplica]]:
    """The app over the default model (open_nsfw's files, labels sfw/nsfw) with ``settings``
    and one fake replica; yields once ``/readyz`` is 200."""
    config = load_config(None, {}, {k: str(v) for k, v in settings.items()})
    service = Service(config, replica=FakeReplica)
    FakeReplica.made.clear()
    with TestClient(create_app(service)) as client:
        for _ in range(1000):
            if client.get("/readyz").status_code == 200:
                break
        else:
            pytest.fail("the fake replica never became ready")
        yield client, service, FakeReplica.made[-1]


@pytest.fixture(scope="module")
def cat() -> bytes:
    return shared("images/cat.jpg").read_bytes()


def test_answer_shape_default_top_k_timing_and_request_id(cat: bytes) -> None:
    with serving() as (client, _, replica):
        response = client.post("/api/classify", content=cat, headers={"X-Request-Id": "r-1"})
        assert response.status_code == 200
        assert response.json() == [
            {"confidence": 0.75, "label": "sfw"},
            {"confidence": 0.25, "label": "nsfw"},
        ]  # default_top_k 5, capped at the 2 classes
        assert response.headers["x-request-id"] == "r-1"
        assert response.headers["server-timing"] == (
            "queue;dur=" + response.headers["server-timing"].split("queue;dur=")[1].split(",")[0]
            + ", preprocess;dur=0.100, inference;dur=0.200"
        )  # fmt: skip
        fresh = client.post("/api/classify?top_k=1", content=cat)
        assert fresh.json() == [{"confidence": 0.75, "label": "sfw"}]
        assert len(fresh.headers["x-request-id"]) == 32
        assert replica.batches == [[cat], [cat]]


@pytest.mark.parametrize("query", ["?top_k=0", "?top_k=3", "?top_k=five", "?top_k=%2B2"])
def test_bad_top_k_is_422_and_never_queued(cat: bytes, query: str) -> None:
    with serving() as (client, _, replica):
        response = client.post(f"/api/classify{query}", content=cat)
        assert (response.status_code, response.json()["error"]) == (422, "bad_top_k")
        assert replica.batches == []


@pytest.mark.parametrize("value", ["soon", "0", "-5", "1_000", "inf", "nan", "1e999"])
def test_bad_timeout_header_is_400(cat: bytes, value: str) -> None:
    with serving() as (client, _, replica):
        headers = {"X-Request-Timeout-Ms": value}
        response = client.post("/api/classify", content=cat, headers=headers)
        assert (response.status_code, response.json()["error"]) == (400, "bad_timeout")
        assert replica.batches == []


def test_timeout_header_lowers_the_deadline_of_a_running_batch(cat: bytes) -> None:
    with serving() as (client, _, replica):
        replica.gate = threading.Event()  # never released: the batch outlives the deadline
        headers = {"X-Request-Timeout-Ms": "50"}
        response = client.post("/api/classify", content=cat, headers=headers)
        replica.gate.set()
    assert response.status_code == 504
    assert response.json() == {
        "error": "deadline_exceeded",
        "message": "deadline passed in a batch",
    }


def test_a_failed_batch_is_503_replica_failed_with_retry_after(cat: bytes) -> None:
    with serving() as (client, _, replica):
        replica.fail = ReplicaBatchError("replica 0@cpu: RuntimeError: out of memory")
        response = client.post("/api/classify", content=cat)
        assert response.status_code == 503
        assert response.json()["error"] == "replica_failed"
        assert response.headers["retry-after"] == "1"
        replica.fail = None
        assert client.post("/api/classify", content=cat).status_code == 200


@pytest.mark.parametrize(
    ("code", "status"), [("bad_image", 400), ("too_large", 413), ("unsupported_format", 415)]
)
def test_an_image_the_replica_refuses_gets_its_catalogue_status(
    cat: bytes, code: str, status: int
) -> None:
    with serving() as (client, _, replica):
        replica.answer = lambda image, k: ItemError(code, "what the decoder said")
        response = client.post("/api/classify", content=cat)
        assert response.status_code == status
        assert response.json() == {"error": code, "message": "what the decoder said"}


def test_an_unexpected_exception_is_500_without_its_text(
    cat: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with serving() as (client, service, _):

        def broken(completed: object) -> bytes:
            raise RuntimeError("secret detail")

        service.answer_json = broken  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR, logger="gre.access"):
            response = client.post("/api/classify", content=cat, headers={"X-Request-Id": "r-9"})
        assert response.status_code == 500
        body = response.json()
        assert body["error"] == "internal"
        assert "r-9" in body["message"]
        assert "secret" not in response.text
        assert "RuntimeError" not in response.text
        assert response.headers["x-request-id"] == "r-9"
        logged = [r for r in caplog.records if r.exc_info]
        assert logged
        assert "secret detail" in str(logged[0].exc_info[1])  # type: ignore[index]
        assert client.get("/healthz").status_code == 200


def test_draining_refuses_new_requests_503(cat: bytes) -> None:
    with serving() as (client, service, _):
        client.portal.call(service.drain)  # type: ignore[union-attr]
        response = client.post("/api/classify", content=cat)
        assert (response.status_code, response.json()["error"]) == (503, "shutting_down")
        assert response.headers["retry-after"] == "1"
        assert client.get("/readyz").json()["draining"] is True


def test_a_full_queue_refuses_before_the_body(cat: bytes) -> None:
    with serving(max_queue_size=1, max_batch_size=1) as (client, _, replica):
        replica.gate = threading.Event()
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(client.post, "/api/classify", content=cat)
            assert replica.started.wait(10)
            queued = pool.submit(client.post, "/api/classify", content=cat)
            for _ in range(10_000):  # until the second request waits in the queue
                if client.get("/api/model").json()["queue"]["waiting"] == 1:
                    break
            refused = client.post("/api/classify", content=cat)
            replica.gate.set()
            assert running.result().status_code == 200
            assert queued.result().status_code == 200
        assert (refused.status_code, refused.json()["error"]) == (503, "queue_full")
        assert [len(b) for b in replica.batches] == [1, 1]


async def test_a_client_that_disconnects_is_dropped_from_the_queue(cat: bytes) -> None:
    """Raw ASGI: the client's receive() says ``http.disconnect`` while its request waits."""
    config = load_config(None, {}, {"max_batch_size": "1"})
    service = Service(config, replica=FakeReplica)
    FakeReplica.made.clear()
    app = create_app(service, start_replicas=False)
    await service.start()
    replica = FakeReplica.made[-1]
    replica.gate = threading.Event()
    try:

        async def call(gone: asyncio.Event) -> list[Message]:
            sent: list[Message] = []
            messages = [{"type": "http.request", "body": cat, "more_body": False}]

            async def receive() -> Message:
                if messages:
                    return messages.pop()
                await gone.wait()
                return {"type": "http.disconnect"}

            async def send(message: Message) -> None:
                sent.append(message)

            scope = {
                "type": "http", "method": "POST", "path": "/api/classify", "headers": [],
                "query_string": b"", "http_version": "1.1", "scheme": "http",
                "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 1), "root_path": "",
                "app": app,
            }  # fmt: skip
            await app(scope, receive, send)
            return sent

        stays, leaves = asyncio.Event(), asyncio.Event()
        running = asyncio.ensure_future(call(stays))
        while not replica.started.is_set():
            await asyncio.sleep(0)
        waiting = asyncio.ensure_future(call(leaves))
        while service.backlog()[0] == 0:
            await asyncio.sleep(0)
        leaves.set()  # the queued request's client goes away
        dropped = await waiting
        assert dropped[0]["status"] == 499  # a status uvicorn never sends: nobody listens
        assert service.backlog() == (0, 1)
        replica.gate.set()
        answered = await running
        assert answered[0]["status"] == 200
        assert json.loads(answered[-1]["body"])[0]["label"] == "sfw"
        assert replica.batches == [[cat]]
    finally:
        replica.gate.set()
        await service.stop()


@pytest.mark.parametrize("sent", ["x" * 129, "has space", "tab\there", "é", ""])
def test_an_unusable_request_id_is_replaced_and_only_its_length_logged(
    cat: bytes, sent: str, caplog: pytest.LogCaptureFixture
) -> None:
    with serving() as (client, _, _replica), caplog.at_level(logging.INFO, logger="gre.access"):
        headers = {"X-Request-Id": sent.encode()}
        response = client.post("/api/classify", content=cat, headers=headers)
    assert response.status_code == 200
    assert len(response.headers["x-request-id"]) == 32
    assert response.headers["x-request-id"] != sent
    (record,) = [r for r in caplog.records if r.getMessage() == "request"]
    assert record.request_id == response.headers["x-request-id"]  # type: ignore[attr-defined]
    if sent:
        assert record.refused_request_id_length == len(sent.encode())  # type: ignore[attr-defined]


def test_a_128_character_request_id_is_kept(cat: bytes) -> None:
    sent = "a-Z_0.9:" * 16
    with serving() as (client, _, _replica):
        response = client.post("/api/classify", content=cat, headers={"X-Request-Id": sent})
    assert response.headers["x-request-id"] == sent


def test_the_classify_shortcut_and_starlettes_router_answer_alike(cat: bytes) -> None:
    """GreApp hands POST /api/classify to its ClassifyRoute before Starlette's middleware;
    the router holds the same route, which answers other methods 405 and the query's top_k
    as Starlette reads it (the last one)."""
    with serving() as (client, _, replica):
        app = client.app
        route = app.classify_route  # type: ignore[attr-defined]
        assert any(getattr(r, "endpoint", None) is route for r in app.routes)  # type: ignore[attr-defined]
        fast = client.post("/api/classify?top_k=2&top_k=1", content=cat)
        assert fast.json() == [{"confidence": 0.75, "label": "sfw"}]
        assert fast.headers["content-type"] == "application/json"
        assert int(fast.headers["content-length"]) == len(fast.content)
        app.classify_route = None  # type: ignore[attr-defined]  # through the router instead
        routed = client.post("/api/classify?top_k=2&top_k=1", content=cat)
        assert routed.json() == fast.json()
        assert set(routed.headers) == set(fast.headers)
        app.classify_route = route  # type: ignore[attr-defined]
        wrong = client.get("/api/classify")
        assert (wrong.status_code, wrong.json()["error"]) == (405, "method_not_allowed")
        assert replica.batches == [[cat], [cat]]
