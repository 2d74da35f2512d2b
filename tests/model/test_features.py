"""Named blobs (``/api/features``' values): every engine's equal pycaffe's ``net.blobs``.

The reference is pycaffe itself, run here as caffe.Net on the same preprocessed photos: each
engine's ``forward_blobs`` must give every blob of every zoo net (seeded random weights) and
of open_nsfw (real weights) within 1e-5 on the caffe engine and 1e-4 on the others, relative
to the blob's largest magnitude (at least 1); and the classifier must answer blobs and
classes of one batch from one forward.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from benchmarks.zoo import ZOO_MODELS
from gre.config import PreprocessConfig
from gre.messages import Device, ItemError, Prediction
from gre.model.classifier import Classifier
from gre.model.engines import EngineError, load_engine
from gre.model.preprocess import Preprocessor
from gre.model.prototxt import read_net_spec
from tests.caffe_reference import require_caffe
from tests.model.test_engine_parity import MODELS, model_files, photo_batch
from tests.model.test_engine_torch import require_torch
from tests.support import shared

THREADS = os.cpu_count() or 1
#: Tolerance relative to max(1, the blob's largest magnitude), per engine.
TOLERANCE = {"caffe": 1e-5, "opencv": 1e-4, "torch": 1e-4}
Array = npt.NDArray[np.float32]


def pycaffe_blobs(deploy: Path, weights: Path, batch: Array) -> dict[str, Array]:
    """``net.blobs`` after a forward of ``batch``: ``{name: (N, D) float32}`` copies."""
    caffe = require_caffe()
    net = caffe.Net(str(deploy), caffe.TEST, weights=str(weights))
    data = net.inputs[0]
    net.blobs[data].reshape(*batch.shape)
    net.reshape()
    net.blobs[data].data[...] = batch
    net.forward()
    return {name: blob.data.reshape(len(batch), -1).copy() for name, blob in net.blobs.items()}


def worst_difference(got: dict[str, Array], expected: dict[str, Array]) -> tuple[str, float]:
    """The blob that differs most, and by how much relative to max(1, its largest value)."""
    rows = [
        (name, float(np.abs(got[name] - ref).max() / max(1.0, float(np.abs(ref).max()))))
        for name, ref in expected.items()
    ]
    return max(rows, key=lambda row: row[1])


@pytest.fixture(params=["caffe", "opencv", "torch"])
def engine_name(request: pytest.FixtureRequest) -> str:
    if request.param == "torch":
        require_torch()
    if request.param == "caffe":
        require_caffe()
    return str(request.param)


@pytest.mark.parametrize("name", MODELS)
def test_every_blob_of_every_net_equals_pycaffes(name: str, engine_name: str) -> None:
    deploy, weights = model_files(name)
    batch = photo_batch(name, deploy)
    expected = pycaffe_blobs(deploy, weights, batch)
    names = read_net_spec(deploy).blob_names  # the prototxt's blobs: what the API accepts
    assert len(names) > 10
    assert set(names) <= set(expected)
    engine = load_engine(engine_name, deploy, weights, Device.cpu(), THREADS, None, 1000)
    shapes = engine.blob_shapes()
    output, got = engine.forward_blobs(batch, names)
    assert list(got) == list(names)
    for blob in names:
        assert got[blob].shape == expected[blob].shape, blob
        assert shapes[blob] == _per_image_shape(deploy, weights, blob), blob
    blob, difference = worst_difference(got, {n: expected[n] for n in names})
    assert difference <= TOLERANCE[engine_name], f"{name}: {blob} differs by {difference:.1e}"
    # The output blob too, as forward's (opencv: from an unfused net, so float rounding apart).
    np.testing.assert_allclose(output, engine.forward(batch), rtol=0, atol=1e-5)


_shapes_cache: dict[tuple[Path, Path], dict[str, tuple[int, ...]]] = {}


def _per_image_shape(deploy: Path, weights: Path, blob: str) -> tuple[int, ...]:
    """pycaffe's ``net.blobs[blob].data.shape[1:]``."""
    if (deploy, weights) not in _shapes_cache:
        caffe = require_caffe()
        net = caffe.Net(str(deploy), caffe.TEST, weights=str(weights))
        _shapes_cache[deploy, weights] = {
            n: tuple(int(d) for d in b.data.shape[1:]) for n, b in net.blobs.items()
        }
    return _shapes_cache[deploy, weights][blob]


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_opencv_blobs_of_a_concat_input_hold_at_every_batch_size(size: int) -> None:
    """GoogLeNet's inception branches feed Concat layers; at N = 1 OpenCV writes them straight
    into the Concat's output and leaves their own outputs stale, so the engine must not run
    a lone image as one (this returned 3e18 for inception_5b/5x5 before)."""
    deploy, weights = model_files("bvlc_googlenet")
    batch = np.concatenate([photo_batch("bvlc_googlenet", deploy)] * 2)[:size]
    blobs = ["inception_5b/5x5", "inception_4e/pool_proj", "inception_5b/output"]
    expected = pycaffe_blobs(deploy, weights, batch)
    engine = load_engine("opencv", deploy, weights, Device.cpu(), THREADS, None, 1000)
    _, got = engine.forward_blobs(batch, blobs)
    blob, difference = worst_difference(got, {n: expected[n] for n in blobs})
    assert difference <= TOLERANCE["opencv"], f"N={size}: {blob} differs by {difference:.1e}"


@pytest.mark.parametrize("engine_kind", ["caffe", "opencv", "torch", "null"])
def test_an_unknown_blob_is_an_engine_error_naming_the_valid_ones(engine_kind: str) -> None:
    if engine_kind == "torch":
        require_torch()
    if engine_kind == "caffe":
        require_caffe()
    deploy, weights = model_files("squeezenet_v1.1")
    engine = load_engine(engine_kind, deploy, weights, Device.cpu(), THREADS, None, 1000)
    batch = np.zeros((1, *read_net_spec(deploy).input_shape), np.float32)
    with pytest.raises(EngineError, match="not a blob of this net: fc9") as raised:
        engine.forward_blobs(batch, ["fc9"])
    if engine_kind != "null":
        assert "conv1" in str(raised.value)


def squeezenet_classifier(engine: str) -> Classifier:
    deploy, weights = model_files("squeezenet_v1.1")
    loaded = load_engine(engine, deploy, weights, Device.cpu(), THREADS, None, 1000)
    config = PreprocessConfig(**ZOO_MODELS["squeezenet_v1.1"])
    pre = Preprocessor.build(config, read_net_spec(deploy).input_shape)
    return Classifier(loaded, pre, apply_softmax=False, decode_threads=2)


def test_one_batch_answers_classes_blobs_and_a_bad_blob_each_its_own() -> None:
    classifier = squeezenet_classifier("opencv")
    cat = shared("images/cat.jpg").read_bytes()
    bike = shared("images/fish-bike.jpg").read_bytes()
    try:
        result = classifier.classify(
            [cat, bike, cat, b"not an image"],
            [5, 0, 3, 5],
            [(), ("pool10", "conv1"), ("nope",), ("pool10",)],
        )
        alone = classifier.classify([bike], [5], [("pool10", "conv1")]).outcomes[0]
        plain = classifier.classify([cat], [5]).outcomes[0]
    finally:
        classifier.close()
    first, second, third, fourth = result.outcomes
    assert isinstance(first, Prediction)
    assert first.features == {}
    assert isinstance(plain, Prediction)
    assert first.indices == plain.indices
    assert isinstance(second, Prediction)
    assert second.indices == ()
    assert list(second.features) == ["pool10", "conv1"]
    assert isinstance(alone, Prediction)
    for blob in ("pool10", "conv1"):
        value: Any = second.features[blob]
        assert value.dtype == np.float32
        assert value.ndim == 1
        np.testing.assert_allclose(value, alone.features[blob], rtol=0, atol=1e-5)
    assert second.features["pool10"].shape == (1000,)
    assert isinstance(third, ItemError)
    assert third.code == "bad_blob"
    assert "nope" in third.message
    assert "pool10" in third.message
    assert isinstance(fourth, ItemError)
    assert fourth.code == "bad_image"
