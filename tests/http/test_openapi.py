"""gre's OpenAPI description (gre/openapi.py) against the app's routes, and a schemathesis
fuzz run against a real ``gre serve`` that checks every answer against the description.

``make test`` runs a short, derandomized fuzz (``FUZZ_EXAMPLES`` per operation, about ten
seconds); ``make fuzz-http`` a longer, random one (``GRE_FUZZ_EXAMPLES``, default 2000).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest
import schemathesis
from hypothesis import settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Route

from gre.config import load_config
from gre.http.app import create_app
from gre.http.openapi import openapi_document
from gre.model.loader import load_model
from gre.service import Service
from tests.support import Server, running_server

#: Examples per operation; ``GRE_FUZZ_EXAMPLES`` asks for a longer run, which is then random
#: rather than derandomized (a failure prints how to reproduce it).
FUZZ_EXAMPLES = int(os.environ.get("GRE_FUZZ_EXAMPLES", "50"))
LONG_RUN = "GRE_FUZZ_EXAMPLES" in os.environ

#: Small, so that a long random body is refused (413) before it is read whole.
MAX_BODY = 64 * 1024
# A deadline far above any forward time (2 busy cores): a 504 here would be a hang.
SETTINGS = ("--set", "timeout_ms=300000", "--set", f"max_body_bytes={MAX_BODY}")

#: What the default model's server describes: open_nsfw has two classes, so top_k <= 2, and
#: its prototxt's blobs are what /api/features may ask.
DOCUMENT = openapi_document(classes=2, blobs=load_model(load_config(None, {})).net.blob_names)


def test_every_route_is_described_and_every_description_routed() -> None:
    app = create_app(Service(load_config(None, {})), start_replicas=False)
    assert all(isinstance(route, Route) for route in app.routes), "a Mount: list its routes"
    # Starlette answers HEAD on every GET route by itself; the document lists what gre means.
    # Routes out of the schema (the try-it page's script and style sheet) are the page's parts.
    routed = {
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, Route) and route.include_in_schema
        for method in route.methods or ()
        if method != "HEAD"
    }
    described = {(path, method) for path, item in DOCUMENT["paths"].items() for method in item}
    assert routed == described


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("openapi"), *SETTINGS) as server:
        yield server


def test_served_document_is_the_description(server: Server) -> None:
    with server.client() as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == DOCUMENT


@st.composite
def encoded_images(draw: st.DrawFn, extension: str) -> bytes:
    """Small images encoded as ``extension``, intact, truncated or with bytes overwritten:
    real decoder input rather than random bytes, which gre refuses from the first byte."""
    height = draw(st.integers(1, 48))
    width = draw(st.integers(1, 48))
    channels = draw(st.sampled_from([1, 3]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    ok, buffer = cv2.imencode(extension, pixels)
    assert ok, extension
    data = bytearray(buffer.tobytes())
    damage = draw(st.sampled_from(["none", "truncate", "overwrite"]))
    if damage == "truncate":
        del data[draw(st.integers(0, len(data) - 1)) :]
    elif damage == "overwrite":
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


for media_type, extension in [
    ("image/jpeg", ".jpg"),
    ("image/png", ".png"),
    ("image/bmp", ".bmp"),
    ("image/webp", ".webp"),
]:
    schemathesis.openapi.media_type(media_type, encoded_images(extension))


@schemathesis.check
def no_server_error(
    ctx: schemathesis.CheckContext,
    response: schemathesis.Response,
    case: schemathesis.Case[Any],
) -> None:
    """No 5xx but the 504 a client asks for with a short ``X-Request-Timeout-Ms``.

    Stricter than schemathesis's ``not_a_server_error``: one client at a time neither fills
    the queue nor finds the server draining, so a 503 here means a request took a replica
    down (``replica_failed``); and the configured deadline is far beyond any forward.
    """
    asked_for_a_deadline = "X-Request-Timeout-Ms" in (case.headers or {})
    if response.status_code == 504 and asked_for_a_deadline:
        return
    assert response.status_code < 500, f"{response.status_code}: {response.text}"


CHECKS = [
    no_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]

# Built from gre/openapi.py at import, as pytest parametrizes at collection, before any server
# runs; test_served_document_is_the_description holds the served document to the same dict.
# (schemathesis.pytest.from_fixture would load it from the server, but its lazy tests need
# pytest's Node._nodeid, which pytest 9.2 removed.)
schema = schemathesis.openapi.from_dict(
    DOCUMENT,
    # Negative cases too: out-of-range top_k, bad headers, missing bodies.
    config=schemathesis.Config.from_dict({"generation": {"mode": "all"}}),
)


@schema.parametrize()
@settings(
    max_examples=FUZZ_EXAMPLES,
    derandomize=not LONG_RUN,
    database=None,
    deadline=None,
)
def test_answers_conform_to_the_description(case: schemathesis.Case[Any], server: Server) -> None:
    case.call_and_validate(base_url=server.url, checks=CHECKS, timeout=60)


def test_server_kept_serving(server: Server) -> None:
    """After the fuzz (tests run in file order): no replica restarted, the model classifies."""
    with server.client() as client:
        replicas = client.get("/api/model").json()["replicas"]
        image = cv2.imencode(".jpg", np.full((32, 32, 3), 128, np.uint8))[1].tobytes()
        response = client.post("/api/classify", content=image)
    assert [(r["state"], r["restarts"]) for r in replicas] == [("ready", 0)]
    assert response.status_code == 200, response.text
