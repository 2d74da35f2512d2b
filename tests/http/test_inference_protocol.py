"""The Open Inference Protocol (KServe v2) routes: in-process over fake replicas for the
protocol's shapes and every refusal, then Triton's own client (``tritonclient[http]``)
against a real ``gre serve`` whose answers must equal ``/api/classify``'s on the same photos.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.http as triton
from starlette.testclient import TestClient
from tritonclient.utils import InferenceServerException

from benchmarks.zoo import zoo_weights
from gre.config import load_config
from gre.http.app import create_app
from gre.http.binary_tensor import HEADER_LENGTH, encode_bytes_elements, split_body
from gre.messages import ItemError, Outcome, Prediction
from gre.model.labels import read_synset_words
from gre.service import Service
from tests.fakes import FakeReplica
from tests.support import Server, running_server, shared

MODEL = "open_nsfw"
INFER = f"/v2/models/{MODEL}/infer"
PHOTOS = ("cat.jpg", "cat_gray.jpg", "fish-bike.jpg")


@pytest.fixture(scope="module")
def photos() -> list[bytes]:
    return [shared(f"images/{name}").read_bytes() for name in PHOTOS]


@contextmanager
def serving(**settings: Any) -> Iterator[tuple[TestClient, FakeReplica]]:
    """The app over the default model (labels sfw/nsfw) with ``settings`` and one fake
    replica; yields once ``/readyz`` is 200."""
    config = load_config(None, {}, {k: str(v) for k, v in settings.items()})
    FakeReplica.made.clear()
    with TestClient(create_app(Service(config, replica=FakeReplica))) as client:
        for _ in range(1000):
            if client.get("/readyz").status_code == 200:
                break
        else:
            pytest.fail("the fake replica never became ready")
        yield client, FakeReplica.made[-1]


def json_request(images: list[bytes], **output_parameters: Any) -> dict[str, Any]:
    """An inference request with the images base64-encoded in JSON, shape [N, 1]."""
    request: dict[str, Any] = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [len(images), 1],
                "data": [[base64.b64encode(image).decode()] for image in images],
            }
        ]
    }
    if output_parameters:
        request["outputs"] = [{"name": "probabilities", "parameters": output_parameters}]
    return request


def binary_request(images: list[bytes], **output_parameters: Any) -> tuple[bytes, dict[str, str]]:
    """The body and headers of an inference request with the images as binary tensor data."""
    data = encode_bytes_elements(images)
    header: dict[str, Any] = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [len(images)],
                "parameters": {"binary_data_size": len(data)},
            }
        ],
        "outputs": [{"name": "probabilities", "parameters": output_parameters}],
    }
    encoded = json.dumps(header).encode()
    return encoded + data, {HEADER_LENGTH: str(len(encoded))}


def by_length(image: bytes, k: int) -> Prediction:
    """A fake replica's answer that tells images apart: P(nsfw) from the image's length,
    float32 as a replica's."""
    nsfw = (len(image) % 97) / 100
    indices, confidences = ((0, 1), (1 - nsfw, nsfw)) if nsfw < 0.5 else ((1, 0), (nsfw, 1 - nsfw))
    return Prediction(indices[:k], tuple(np.array(confidences[:k], np.float32).tolist()))


def fake_vector(image: bytes) -> list[float]:
    """:func:`by_length`'s probabilities by class index."""
    prediction = by_length(image, 2)
    vector = [0.0, 0.0]
    for index, confidence in zip(prediction.indices, prediction.confidences, strict=True):
        vector[index] = confidence
    return vector


# Health, metadata, config


def test_server_metadata_health_and_model_metadata() -> None:
    with serving() as (client, _):
        assert client.get("/v2").json() == {
            "name": "gre",
            "version": "0.1.0",
            "extensions": ["classification", "binary_tensor_data", "model_configuration"],
        }
        assert client.get("/v2/health/live").json() == {"live": True}
        assert client.get("/v2/health/ready").json() == {"ready": True}
        for prefix in (f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/versions/1"):
            assert client.get(f"{prefix}/ready").json() == {"name": MODEL, "ready": True}
            assert client.get(prefix).json() == {
                "name": MODEL,
                "versions": ["1"],
                "platform": "caffe",
                "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1, 1]}],
                "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}],
            }


def test_model_config_is_tritons_shape_from_the_settings() -> None:
    settings = {"max_batch_size": 8, "max_queue_delay_ms": 2.5, "max_queue_size": 40}
    with serving(**settings, timeout_ms=1500) as (client, _):
        config = client.get(f"/v2/models/{MODEL}/config").json()
    assert config == {
        "name": MODEL,
        "platform": "caffe",
        "backend": "opencv",
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": 8,
        "input": [
            {"name": "image", "data_type": "TYPE_STRING", "format": "FORMAT_NONE", "dims": [1]}
        ],
        "output": [{"name": "probabilities", "data_type": "TYPE_FP32", "dims": [2]}],
        "dynamic_batching": {
            "max_queue_delay_microseconds": 2500,
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": 1500000,
                "allow_timeout_override": True,
                "max_queue_size": 40,
            },
        },
        "instance_group": [{"name": f"{MODEL}_0", "count": 1, "kind": "KIND_CPU"}],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "message"),
    [
        ("GET", "/v2/models/nope", "unknown model 'nope': gre serves 'open_nsfw'"),
        ("GET", "/v2/models/nope/ready", "unknown model 'nope': gre serves 'open_nsfw'"),
        ("GET", "/v2/models/nope/config", "unknown model 'nope': gre serves 'open_nsfw'"),
        ("POST", "/v2/models/nope/infer", "unknown model 'nope': gre serves 'open_nsfw'"),
        (
            "GET",
            f"/v2/models/{MODEL}/versions/2",
            "unknown version '2' of model 'open_nsfw': version '1' serves",
        ),
        (
            "POST",
            f"/v2/models/{MODEL}/versions/0/infer",
            "unknown version '0' of model 'open_nsfw': version '1' serves",
        ),
    ],
)
def test_unknown_model_or_version_is_404_in_the_protocols_shape(
    method: str, path: str, message: str, photos: list[bytes]
) -> None:
    with serving() as (client, replica):
        response = client.request(method, path, json=json_request(photos[:1]))
        assert response.status_code == 404
        assert response.json() == {"error": message}
        assert replica.batches == []


# Inference


def test_json_answers_each_images_probabilities_in_request_order(photos: list[bytes]) -> None:
    with serving() as (client, replica):
        replica.answer = by_length
        request = {**json_request(photos), "id": "req-7"}
        response = client.post(INFER, json=request, headers={"X-Request-Id": "r-1"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"] == "r-1"
    assert response.json() == {
        "model_name": MODEL,
        "id": "req-7",
        "outputs": [
            {
                "name": "probabilities",
                "datatype": "FP32",
                "shape": [3, 2],
                "data": [p for image in photos for p in fake_vector(image)],
            }
        ],
    }
    assert replica.batches == [photos], "the request's images were not queued together"


def test_classification_strings_are_tritons_format(photos: list[bytes]) -> None:
    with serving() as (client, replica):
        replica.answer = by_length
        one = client.post(INFER, json=json_request(photos, classification=1)).json()
        every = client.post(INFER, json=json_request(photos, classification=9)).json()
    rows = []
    for image in photos:
        prediction = by_length(image, 2)
        pairs = zip(prediction.indices, prediction.confidences, strict=True)
        rows.append([f"{c:f}:{i}:{('sfw', 'nsfw')[i]}" for i, c in pairs])
    tops = [row[0] for row in rows]
    assert one["outputs"] == [
        {"name": "probabilities", "datatype": "BYTES", "shape": [3, 1], "data": tops}
    ]
    # More than the classes: all of them (Triton's rule).
    assert every["outputs"][0]["shape"] == [3, 2]
    assert every["outputs"][0]["data"] == [s for row in rows for s in row]
    assert re.fullmatch(r"0\.[0-9]{6}:[01]:n?sfw", rows[0][0])


def test_binary_in_and_out(photos: list[bytes]) -> None:
    with serving() as (client, replica):
        replica.answer = by_length
        body, headers = binary_request(photos, binary_data=True)
        raw = client.post(INFER, content=body, headers=headers)
        body, headers = binary_request(photos, binary_data=True, classification=1)
        classified = client.post(INFER, content=body, headers=headers)
        body, headers = binary_request(photos)  # no binary_data: JSON out
        as_json = client.post(INFER, content=body, headers=headers)
    assert raw.status_code == 200, raw.text
    assert raw.headers["content-type"] == "application/octet-stream"
    header, data = split_body(raw.content, raw.headers[HEADER_LENGTH])
    assert json.loads(header)["outputs"] == [
        {
            "name": "probabilities",
            "datatype": "FP32",
            "shape": [3, 2],
            "parameters": {"binary_data_size": 24},
        }
    ]
    expected = np.array([fake_vector(image) for image in photos], np.float32)
    np.testing.assert_array_equal(np.frombuffer(data, "<f4").reshape(3, 2), expected)
    assert as_json.json()["outputs"][0]["data"] == expected.ravel().tolist()
    header, data = split_body(classified.content, classified.headers[HEADER_LENGTH])
    assert json.loads(header)["outputs"][0]["datatype"] == "BYTES"
    assert data.count(b":sfw") + data.count(b":nsfw") == 3


def test_binary_data_output_asks_for_every_output_in_binary(photos: list[bytes]) -> None:
    with serving() as (client, _):
        request = {**json_request(photos[:1]), "parameters": {"binary_data_output": True}}
        response = client.post(INFER, json=request)
    header, data = split_body(response.content, response.headers[HEADER_LENGTH])
    assert json.loads(header)["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert np.frombuffer(data, "<f4").tolist() == [0.75, 0.25]


def error_of(response: httpx.Response) -> str:
    body = response.json()
    assert list(body) == ["error"], body
    return str(body["error"])


def with_input(**changes: Any) -> dict[str, Any]:
    request = json_request([b"\xff\xd8"])
    request["inputs"][0].update(changes)
    return request


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        (b"not json", {}, "the inference request is not JSON (nor a JSON header)"),
        (b"[1, 2]", {}, "the inference request must be a JSON object"),
        (b"[" * 100000, {}, "the inference request is not JSON (nor a JSON header)"),
        (json.dumps({"inputs": []}), {}, "'inputs' must hold one input, 'image'"),
        (json.dumps(with_input(name="INPUT0")), {}, "unexpected input 'INPUT0'"),
        (json.dumps(with_input(datatype="UINT8")), {}, "got datatype 'UINT8'"),
        (json.dumps(with_input(shape=[1, 3])), {}, "has shape [N, 1] or [N], got [1, 3]"),
        (json.dumps(with_input(shape=[True])), {}, "has shape [N, 1] or [N], got [True]"),
        (json.dumps(with_input(shape=[0])), {}, "a request holds 1..4 images"),
        (json.dumps(with_input(shape=[5, 1])), {}, "a request holds 1..4 images"),
        (json.dumps(with_input(shape=[2, 1])), {}, "holds 1 elements; its shape gives 2"),
        (json.dumps(with_input(data=[7])), {}, "'data' must be a list of base64 strings"),
        (json.dumps(with_input(data=["%%%"])), {}, "image 0 of 1: not base64"),
        (
            json.dumps(with_input(parameters={"binary_data_size": 3})),
            {},
            "exactly one of 'data' and parameters.binary_data_size",
        ),
        (
            json.dumps({**with_input(), "outputs": [{"name": "logits"}]}),
            {},
            "unexpected outputs ['logits']",
        ),
        (
            json.dumps(json_request([b"x"], classification=-1)),
            {},
            "'classification' of output 'probabilities' must be a non-negative integer",
        ),
        (
            json.dumps(json_request([b"x"], binary_data="yes")),
            {},
            "'binary_data' of output 'probabilities' must be true or false",
        ),
        (
            json.dumps(json_request([b"x"], shared_memory_region="r")),
            {},
            "the shared-memory extension is not supported",
        ),
        (
            json.dumps({**with_input(), "parameters": {"timeout": "soon"}}),
            {},
            "'timeout' of the request must be a non-negative integer",
        ),
        (json.dumps({**with_input(), "id": 5}), {}, "'id' must be a string"),
        (b"{}", {HEADER_LENGTH: "0"}, "raw binary request"),
        (b"{}", {HEADER_LENGTH: "3"}, "is 3 but the body has only 2 bytes"),
        (b"{}", {HEADER_LENGTH: "-1"}, "must be a decimal byte count"),
        (
            json.dumps(with_input()) + "xx",
            {HEADER_LENGTH: str(len(json.dumps(with_input())))},
            "2 bytes follow the header but no input is binary",
        ),
    ],
)
def test_requests_the_protocol_does_not_take_are_400_and_never_queued(
    body: bytes | str, headers: dict[str, str], message: str
) -> None:
    with serving(max_batch_size=4) as (client, replica):
        response = client.post(INFER, content=body, headers=headers)
        assert response.status_code == 400
        assert message in error_of(response)
        assert replica.batches == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x05\x00\x00\x00abc", "BYTES element 0 declares 5 bytes; 3 remain"),
        (b"\x01\x00", "BYTES element 0: its 4-byte length is cut off at byte 0"),
        (b"\x01\x00\x00\x00a" * 3, "holds more than the 2 elements its shape gives"),
        (b"\x01\x00\x00\x00a", "holds 1 elements; its shape gives 2"),
    ],
)
def test_malformed_binary_tensor_data_is_400(data: bytes, message: str) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [2, 1],
                    "parameters": {"binary_data_size": len(data)},
                }
            ]
        }
    ).encode()
    with serving() as (client, replica):
        response = client.post(
            INFER, content=header + data, headers={HEADER_LENGTH: str(len(header))}
        )
        assert response.status_code == 400
        assert message in error_of(response)
        mismatch = client.post(
            INFER, content=header + data + b"!", headers={HEADER_LENGTH: str(len(header))}
        )
        assert "declares binary_data_size" in error_of(mismatch)
        assert replica.batches == []


def test_an_image_refused_by_its_checks_is_named_and_nothing_is_queued(photos: list[bytes]) -> None:
    gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
    with serving() as (client, replica):
        response = client.post(INFER, json=json_request([photos[0], gif, photos[2]]))
        assert response.status_code == 415
        assert error_of(response).startswith("unsupported_format: image 1 of 3: ")
        empty = client.post(INFER, json=json_request([photos[0], photos[1], b""]))
        assert empty.status_code == 400
        assert error_of(empty).startswith("bad_image: image 2 of 3: ")
        assert replica.batches == []


@pytest.mark.parametrize(
    ("code", "status"), [("bad_image", 400), ("too_large", 413), ("unsupported_format", 415)]
)
def test_an_image_the_replica_refuses_is_named_with_its_catalogue_status(
    photos: list[bytes], code: str, status: int
) -> None:
    def answer(image: bytes, k: int) -> Outcome:
        if image == photos[1]:
            return ItemError(code, "what the decoder said")
        return Prediction((0, 1)[:k], (0.75, 0.25)[:k])

    with serving() as (client, replica):
        replica.answer = answer
        response = client.post(INFER, json=json_request(photos))
    assert response.status_code == status
    assert response.json() == {"error": f"{code}: image 1 of 3: what the decoder said"}


def test_the_deadline_is_504_naming_the_image(photos: list[bytes]) -> None:
    with serving() as (client, replica):
        replica.gate = threading.Event()  # never released: the batch outlives the deadline
        late = client.post(
            INFER, json=json_request(photos[:2]), headers={"X-Request-Timeout-Ms": "50"}
        )
        by_parameter = client.post(
            INFER, json={**json_request(photos[:1]), "parameters": {"timeout": 50_000}}
        )
        replica.gate.set()
    assert late.status_code == 504
    assert late.json() == {"error": "deadline_exceeded: image 0 of 2: deadline passed in a batch"}
    assert by_parameter.status_code == 504


def test_an_image_beyond_the_queue_is_503_and_the_others_are_dropped(photos: list[bytes]) -> None:
    with serving(max_queue_size=2) as (client, replica):
        response = client.post(INFER, json=json_request(photos))
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert error_of(response).startswith("queue_full: image 2 of 3: ")
        assert client.post(INFER, json=json_request(photos[:2])).status_code == 200
        assert replica.batches == [photos[:2]], "the refused request's images ran"


def test_a_body_over_max_body_bytes_is_413(photos: list[bytes]) -> None:
    with serving(max_body_bytes=4096) as (client, replica):
        response = client.post(INFER, json=json_request(photos[:1]))
        assert response.status_code == 413
        assert error_of(response).startswith("too_large: ")
        assert replica.batches == []


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_requests_and_refusals_count_in_the_metrics(photos: list[bytes]) -> None:
    with serving() as (client, _):
        client.post(INFER, json=json_request(photos))
        client.post(INFER, json=json_request([b"not an image"]))
        client.post("/v2/models/nope/infer", json=json_request(photos))
        text = client.get("/metrics").text
    assert metric(text, 'gre_requests_total{code="200"}') == 1
    assert metric(text, 'gre_requests_total{code="400"}') == 1
    assert metric(text, 'gre_requests_total{code="404"}') == 1
    assert metric(text, 'gre_rejected_total{reason="bad_image"}') == 1


# Triton's client against a real server

SETTINGS = ("--set", "max_queue_delay_ms=20", "--set", "timeout_ms=300000")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("v2"), *SETTINGS) as server:
        yield server


def client_of(server: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(
        server.url.removeprefix("http://"), connection_timeout=60, network_timeout=120
    )


def classify(server: Server, image: bytes, top_k: int) -> list[dict[str, Any]]:
    response = httpx.post(f"{server.url}/api/classify?top_k={top_k}", content=image, timeout=120)
    assert response.status_code == 200, response.text
    return list(response.json())


def infer(
    client: triton.InferenceServerClient,
    model: str,
    images: list[bytes],
    binary_in: bool,
    output: triton.InferRequestedOutput,
) -> npt.NDArray[Any]:
    """Triton's client's answer for ``images``: BYTES [N, 1], raw bytes in binary tensor
    data or base64 in JSON (the client sends JSON BYTES only as UTF-8 strings)."""
    rows = images if binary_in else [base64.b64encode(image) for image in images]
    tensor = triton.InferInput("image", [len(images), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[row] for row in rows], np.object_), binary_data=binary_in)
    result = client.infer(model, [tensor], outputs=[output])
    answer: npt.NDArray[Any] | None = result.as_numpy("probabilities")
    assert answer is not None
    return answer


def assert_probabilities_match(
    vectors: npt.NDArray[Any], answers: list[list[dict[str, Any]]], labels: list[str]
) -> None:
    """Each vector's top-k (by probability, ties by index) are classify's answer to 1e-6."""
    for vector, answer in zip(vectors, answers, strict=True):
        order = np.argsort(-vector, kind="stable")[: len(answer)]
        assert [labels[i] for i in order] == [entry["label"] for entry in answer]
        np.testing.assert_allclose(vector[order], [e["confidence"] for e in answer], atol=1e-6)


def assert_classifications_match(
    strings: npt.NDArray[Any], answers: list[list[dict[str, Any]]], labels: list[str]
) -> None:
    """Each row is classify's answer as Triton's ``"%f:<index>:<label>"`` strings."""
    for row, answer in zip(strings, answers, strict=True):
        texts = [s.decode() if isinstance(s, bytes) else str(s) for s in row]
        expected = [f"{e['confidence']:f}:{labels.index(e['label'])}:{e['label']}" for e in answer]
        assert texts == expected


def test_tritonclient_health_and_metadata(server: Server) -> None:
    with client_of(server) as client:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready(MODEL)
        assert client.is_model_ready(MODEL, "1")
        assert not client.is_model_ready("nope")
        assert client.get_server_metadata()["extensions"] == [
            "classification",
            "binary_tensor_data",
            "model_configuration",
        ]
        metadata = client.get_model_metadata(MODEL)
        assert metadata["outputs"] == [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}
        ]
        config = client.get_model_config(MODEL)
        assert (config["max_batch_size"], config["output"][0]["dims"]) == (32, [2])


@pytest.mark.parametrize("binary_out", [True, False], ids=["binary-out", "json-out"])
@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
def test_tritonclient_answers_equal_classify(
    server: Server, photos: list[bytes], binary_in: bool, binary_out: bool
) -> None:
    answers = [classify(server, photo, 2) for photo in photos]
    labels = ["sfw", "nsfw"]
    with client_of(server) as client:
        output = triton.InferRequestedOutput("probabilities", binary_data=binary_out)
        vectors = infer(client, MODEL, photos, binary_in, output)
        output = triton.InferRequestedOutput("probabilities", binary_out, class_count=2)
        strings = infer(client, MODEL, photos, binary_in, output)
    assert vectors.shape == (3, 2)
    assert vectors.dtype == np.float32
    assert_probabilities_match(vectors, answers, labels)
    assert strings.shape == (3, 2)
    assert_classifications_match(strings, answers, labels)


def test_tritonclient_unknown_model_raises_404(server: Server, photos: list[bytes]) -> None:
    with client_of(server) as client, pytest.raises(InferenceServerException) as raised:
        infer(client, "nope", photos[:1], True, triton.InferRequestedOutput("probabilities"))
    assert raised.value.status() == "404"
    assert raised.value.message() == "unknown model 'nope': gre serves 'open_nsfw'"


@pytest.mark.parametrize("cut", ["header", "data"])
def test_tritonclient_a_bad_image_in_a_batch_names_it(
    server: Server, photos: list[bytes], cut: str
) -> None:
    """Cut in its header: refused before queueing; cut in its data: by the replica."""
    broken = photos[1][:300] if cut == "header" else photos[1][: len(photos[1]) // 2]
    output = triton.InferRequestedOutput("probabilities")
    with client_of(server) as client, pytest.raises(InferenceServerException) as raised:
        infer(client, MODEL, [photos[0], broken, photos[2]], True, output)
    assert raised.value.status() == "400"
    assert raised.value.message().startswith("bad_image: image 1 of 3: ")
    assert classify(server, photos[0], 1)  # the server serves on


def squeezenet_config(tmp_path: Path) -> Path:
    """SqueezeNet 1.1 (seeded random weights, the tests' zoo) with ImageNet's 1000 labels."""
    deploy = shared("models/squeezenet_v1.1/deploy.prototxt")
    weights = zoo_weights(deploy, "squeezenet_v1.1")
    synsets = shared("data/ilsvrc12/synset_words.txt")
    config = tmp_path / "squeezenet.toml"
    config.write_text(
        f'[model]\nname = "squeezenet_v1.1"\ndeploy = "{deploy}"\nweights = "{weights}"\n'
        f'synset_words = "{synsets}"\nengine = "opencv"\n'
    )
    return config


def test_tritonclient_top_5_of_1000_classes_equals_classify(
    tmp_path: Path, photos: list[bytes]
) -> None:
    config = squeezenet_config(tmp_path)
    labels = read_synset_words(shared("data/ilsvrc12/synset_words.txt"))
    with running_server(tmp_path, "--config", str(config), *SETTINGS) as server:
        answers = [classify(server, photo, 5) for photo in photos]
        with client_of(server) as client:
            assert client.get_model_metadata("squeezenet_v1.1")["outputs"][0]["shape"] == [-1, 1000]
            output = triton.InferRequestedOutput("probabilities", class_count=5)
            strings = infer(client, "squeezenet_v1.1", photos, True, output)
            vectors = infer(
                client,
                "squeezenet_v1.1",
                photos,
                False,
                triton.InferRequestedOutput("probabilities"),
            )
    assert strings.shape == (3, 5)
    assert_classifications_match(strings, answers, labels)
    assert vectors.shape == (3, 1000)
    np.testing.assert_allclose(vectors.sum(axis=1), 1.0, atol=1e-4)
    assert_probabilities_match(vectors, answers, labels)
