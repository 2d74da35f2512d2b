"""Engine parity: pycaffe (``caffe``) and OpenCV DNN (``opencv``) give the same outputs.

Zoo architectures run with seeded random weights (benchmarks/zoo.py, cached under
~/.cache/gre), open_nsfw with its real weights; the input batch is real photos preprocessed
with each model's conventions. Compared: the probabilities and the pre-softmax blob through
gre's engines, every layer's output, and the HTTP server's answers against the engine called
in-process. docs/fidelity.md has the measured differences.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from benchmarks.zoo import ZOO_MODELS, check_not_uniform, zoo_weights
from gre.config import PreprocessConfig, load_config, resolve_path
from gre.messages import Device, Prediction
from gre.model.classifier import Classifier, softmax
from gre.model.engines import load_engine
from gre.model.imaging import decode_bgr
from gre.model.preprocess import Preprocessor
from gre.model.prototxt import parse, read_net_spec
from gre.offline import build_classifier
from tests.caffe_reference import require_caffe
from tests.support import running_server, shared

#: Tolerances: probabilities, and the pre-softmax blob (the Softmax layer's input).
PROB_ATOL = 1e-5
LOGIT_ATOL = 1e-4
MODELS = [*ZOO_MODELS, "open_nsfw"]
PHOTOS = ("images/cat.jpg", "images/fish-bike.jpg", "images/cat_gray.jpg")
THREADS = os.cpu_count() or 1


def model_files(name: str) -> tuple[Path, Path]:
    """``(deploy, weights)``: a zoo prototxt with its cached random weights, or open_nsfw's
    real files located as gre.config does (``package:nsfw/...``)."""
    if name == "open_nsfw":
        deploy = resolve_path("package:nsfw/deploy.prototxt", Path.cwd())
        weights = resolve_path("package:nsfw/resnet_50_1by2_nsfw.caffemodel", Path.cwd())
        return Path(deploy), Path(weights)
    deploy_path = shared(f"models/{name}/deploy.prototxt")
    return deploy_path, zoo_weights(deploy_path, name)


def softmax_input(deploy: Path) -> str:
    """The bottom blob of the prototxt's last Softmax layer."""
    net = parse(deploy.read_text(encoding="utf-8"))
    layers = [layer for layer in net.get("layer", []) if isinstance(layer, dict)]
    softmaxes = [layer for layer in layers if layer.get("type") == ["Softmax"]]
    assert softmaxes, f"{deploy} has no Softmax layer"
    return str(softmaxes[-1]["bottom"][0])


def photo_batch(name: str, deploy: Path) -> npt.NDArray[np.float32]:
    """The photos, preprocessed with the model's conventions, as one ``(N, C, H, W)`` batch."""
    config = PreprocessConfig(**ZOO_MODELS.get(name, {}))  # open_nsfw: the defaults
    pre = Preprocessor.build(config, read_net_spec(deploy).input_shape)
    return np.stack([pre(decode_bgr(shared(p).read_bytes())) for p in PHOTOS])


def run(
    engine: str, deploy: Path, weights: Path, blob: str | None, batch: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    loaded = load_engine(engine, deploy, weights, Device.cpu(), THREADS, blob, 1000)
    assert loaded.name == engine
    return loaded.forward(batch)


def top5(rows: npt.NDArray[np.float32]) -> list[list[int]]:
    return [[int(i) for i in np.argsort(-row, kind="stable")[:5]] for row in rows]


@pytest.mark.parametrize("name", MODELS)
def test_caffe_and_opencv_engines_agree(name: str) -> None:
    require_caffe()
    deploy, weights = model_files(name)
    batch = photo_batch(name, deploy)
    logits_blob = softmax_input(deploy)
    probs = {e: run(e, deploy, weights, None, batch) for e in ("caffe", "opencv")}
    logits = {e: run(e, deploy, weights, logits_blob, batch) for e in ("caffe", "opencv")}
    classes = probs["caffe"].shape[1]
    assert probs["caffe"].shape == probs["opencv"].shape == (len(PHOTOS), classes)
    assert logits["caffe"].shape == logits["opencv"].shape == (len(PHOTOS), classes)
    assert np.abs(probs["caffe"] - probs["opencv"]).max() <= PROB_ATOL
    assert np.abs(logits["caffe"] - logits["opencv"]).max() <= LOGIT_ATOL
    assert top5(probs["caffe"]) == top5(probs["opencv"])
    assert top5(logits["caffe"]) == top5(logits["opencv"]) == top5(probs["caffe"])
    # Each engine's Softmax layer is the softmax of its own logits (float64 reference; Caffe
    # sums the exponentials in float32: up to 1.4e-6 off), and the outputs say something: rows
    # sum to 1, far from uniform, logits spread out.
    for engine in ("caffe", "opencv"):
        np.testing.assert_allclose(probs[engine], softmax(logits[engine]), rtol=0, atol=3e-6)
        np.testing.assert_allclose(probs[engine].sum(axis=1), 1.0, atol=1e-5)
    check_not_uniform(probs["caffe"])
    assert logits["caffe"].std() > 1.0


#: Largest relative difference (to the blob's largest magnitude) allowed for any layer's output.
LAYER_RTOL = 2e-5
#: Layers compared by no engine API: the input, and the Split copies Caffe inserts itself.
UNCOMPARED_TYPES = {"Input", "Split"}


def layer_differences(name: str) -> list[tuple[str, str, float]]:
    """Every layer's output, Caffe (run one layer at a time) vs OpenCV (fusion off, so each
    layer exists on its own): ``(layer, type, max |diff| / max |caffe|)`` in net order."""
    caffe = require_caffe()
    deploy, weights = model_files(name)
    batch = photo_batch(name, deploy)
    net = caffe.Net(str(deploy), caffe.TEST, weights=str(weights))
    data = net.inputs[0]
    net.blobs[data].reshape(*batch.shape)
    net.reshape()
    net.blobs[data].data[...] = batch
    names = list(net._layer_names)
    outputs: dict[str, tuple[str, npt.NDArray[np.float32]]] = {}
    for index, layer in enumerate(net.layers):
        net._forward(index, index)  # in-place layers overwrite their input: copy each output
        tops = net.top_names[names[index]]
        if tops:
            outputs[names[index]] = (layer.type, net.blobs[tops[0]].data.copy())
    ocv = cv2.dnn.readNetFromCaffe(str(deploy), str(weights))
    ocv.enableFusion(False)
    ocv.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    ocv.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    ocv.setInput(batch)
    known = set(ocv.getLayerNames())
    skipped = {outputs[n][0] for n in outputs if n not in known}
    assert skipped <= UNCOMPARED_TYPES, f"OpenCV lacks layers of type {skipped}"
    compared = [n for n in outputs if n in known]
    results = []
    for layer_name, got in zip(compared, ocv.forward(compared), strict=True):
        kind, expected = outputs[layer_name]
        assert got.size == expected.size, (layer_name, got.shape, expected.shape)
        diff = np.abs(got.reshape(expected.shape) - expected).max()
        results.append((layer_name, kind, float(diff / max(np.abs(expected).max(), 1e-12))))
    return results


@pytest.mark.parametrize("name", MODELS)
def test_every_layer_output_agrees(name: str) -> None:
    """No layer type runs differently in OpenCV: every layer's output is within float32
    rounding (relative 2e-5) of Caffe's (docs/fidelity.md lists the measured figures)."""
    results = layer_differences(name)
    assert len(results) > 20
    worst = max(results, key=lambda r: r[2])
    assert worst[2] <= LAYER_RTOL, f"{worst[0]} ({worst[1]}) differs by {worst[2]:.1e} relative"


# ---- through the HTTP server -------------------------------------------------------------

HTTP_PHOTOS = ("images/cat.jpg", "images/cat_gray.jpg", "images/fish-bike.jpg")
LABELS = ["sfw", "nsfw"]


@pytest.fixture(params=["caffe", "opencv"])
def engine(request: pytest.FixtureRequest) -> str:
    if request.param == "caffe":
        require_caffe()
    return str(request.param)


@pytest.fixture
def direct(engine: str) -> Iterator[Classifier]:
    """The default model (open_nsfw) with this engine, called in this process."""
    classifier = build_classifier(load_config(None, {}, {"engine": engine}))
    assert classifier.engine.name == engine
    yield classifier
    classifier.close()


def test_http_server_answers_as_the_engine_called_directly(
    tmp_path: Path, engine: str, direct: Classifier
) -> None:
    with running_server(tmp_path, "--engine", engine) as server, server.client() as client:
        assert client.get("/api/model").json()["engine"] == engine
        for photo in HTTP_PHOTOS:
            data = shared(photo).read_bytes()
            response = client.post("/api/classify?top_k=2", content=data)
            assert response.status_code == 200, response.text
            answer = response.json()
            expected = direct.classify([data], [2]).outcomes[0]
            assert isinstance(expected, Prediction)
            assert [a["label"] for a in answer] == [LABELS[i] for i in expected.indices]
            np.testing.assert_allclose(
                [a["confidence"] for a in answer], expected.confidences, rtol=0, atol=1e-6
            )
