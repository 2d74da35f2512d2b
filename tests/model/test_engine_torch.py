"""The ``torch`` engine (gre's own Caffe -> PyTorch converter) against pycaffe, in fp32.

Zoo nets run with seeded random weights (benchmarks/zoo.py), open_nsfw with its real weights,
on real photos preprocessed by gre's Preprocessor. Compared with ``caffe.Net(deploy, TEST)``:
probabilities (1e-5 absolute), the pre-softmax blob (1e-4), top-5, and every layer's top blob
(2e-5 of the blob's largest magnitude). Then unit tests of Caffe conventions on tiny nets.
"""

from __future__ import annotations

import importlib.util
import weakref
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pytest

from benchmarks.zoo import ZOO_MODELS, check_not_uniform
from gre.config import PreprocessConfig
from gre.messages import Device
from gre.model.caffemodel import CaffemodelError, read_weights
from gre.model.engines import EngineError, load_engine
from gre.model.imaging import decode_bgr
from gre.model.preprocess import Preprocessor
from gre.model.prototxt import parse, read_net_spec
from tests.caffe_reference import require_caffe
from tests.model.test_engine_parity import model_files, softmax_input
from tests.support import distinct_jpegs

if TYPE_CHECKING:
    from torch import Tensor

Array = npt.NDArray[np.float32]
PROB_ATOL, LOGIT_ATOL, LAYER_RTOL = 1e-5, 1e-4, 2e-5
MODELS = [*ZOO_MODELS, "open_nsfw"]
#: Layers with no counterpart in the converted module: the inputs, and the Split layers Caffe
#: inserts for blobs with several consumers.
UNCOMPARED_TYPES = {"Input", "Split"}


def require_torch() -> ModuleType:
    """``import torch``, or fail the test saying how to install it."""
    if importlib.util.find_spec("torch") is None:
        pytest.fail(
            "PyTorch is not installed: `.venv/bin/pip install torch` (a CPU build: "
            "--index-url https://download.pytorch.org/whl/cpu) to test the torch engine",
            pytrace=False,
        )
    import torch

    torch.set_num_threads(2)
    return torch


def photo_batch(name: str, deploy: Path, count: int = 3) -> Array:
    """``count`` real photos, preprocessed with the model's conventions, as one batch."""
    config = PreprocessConfig(**ZOO_MODELS.get(name, {}))  # open_nsfw: the defaults
    pre = Preprocessor.build(config, read_net_spec(deploy).input_shape)
    return np.stack([pre(decode_bgr(data)) for data in distinct_jpegs(count)])


def caffe_layers(
    deploy: Path, weights: Path, batch: Array
) -> tuple[Any, dict[tuple[str, str], tuple[str, Array]]]:
    """Run pycaffe one layer at a time; ``(net, {(layer, top): (type, copy of the top)})``
    (in-place layers overwrite their input, hence the copies)."""
    caffe = require_caffe()
    caffe.set_mode_cpu()
    net = caffe.Net(str(deploy), caffe.TEST, weights=str(weights))
    net.blobs[net.inputs[0]].reshape(*batch.shape)
    net.reshape()
    net.blobs[net.inputs[0]].data[...] = batch
    outputs = {}
    for index, (name, layer) in enumerate(zip(net._layer_names, net.layers, strict=True)):
        net._forward(index, index)
        for top in net.top_names[name]:
            outputs[name, top] = (layer.type, net.blobs[top].data.copy())
    return net, outputs


def top5(rows: Array) -> list[list[int]]:
    return [[int(i) for i in np.argsort(-row, kind="stable")[:5]] for row in rows]


@pytest.mark.parametrize("name", MODELS)
def test_torch_engine_matches_pycaffe(name: str) -> None:
    torch = require_torch()
    from gre.model.engines.torch import TorchEngine

    deploy, weights = model_files(name)
    batch = photo_batch(name, deploy)
    net, expected = caffe_layers(deploy, weights, batch)
    engine = load_engine("torch", deploy, weights, Device.cpu(), 2, None, 1000)
    assert isinstance(engine, TorchEngine)
    assert (engine.name, engine.device) == ("torch", "cpu")
    probs = engine.forward(batch)
    tops: dict[str, list[Tensor]] = {}
    with torch.inference_mode():
        blobs = engine.module(torch.from_numpy(batch), lambda n, t: tops.__setitem__(n, t))
    ref_probs = net.blobs[net.outputs[-1]].data.reshape(len(batch), -1)
    logits_name = softmax_input(deploy)
    ref_logits = net.blobs[logits_name].data.reshape(len(batch), -1)
    logits = blobs[logits_name].numpy().reshape(len(batch), -1)
    assert probs.shape == ref_probs.shape
    assert probs.dtype == np.float32
    prob_diff, logit_diff = np.abs(probs - ref_probs).max(), np.abs(logits - ref_logits).max()
    worst: tuple[float, str, str] = (0.0, "", "")
    skipped = set()
    for (layer, top), (kind, reference) in expected.items():
        if layer not in tops:
            skipped.add(kind)
            continue
        spec = next(s for s in engine.module.specs if s.name == layer)
        got = tops[layer][spec.tops.index(top)].numpy()
        assert got.shape == reference.shape, (layer, got.shape, reference.shape)
        relative = float(np.abs(got - reference).max() / max(np.abs(reference).max(), 1e-12))
        worst = max(worst, (relative, layer, kind))
    print(f"{name}: probs {prob_diff:.2e} logits {logit_diff:.2e} worst layer {worst}")
    assert skipped <= UNCOMPARED_TYPES, f"layers missing from the module: {skipped}"
    assert prob_diff <= PROB_ATOL
    assert logit_diff <= LOGIT_ATOL
    assert top5(probs) == top5(ref_probs)
    assert worst[0] <= LAYER_RTOL, f"{worst[1]} ({worst[2]}) differs by {worst[0]:.1e} relative"
    check_not_uniform(ref_probs)


# ---- Caffe conventions on tiny nets ---------------------------------------------------------


def tiny_net(tmp_path: Path, shape: tuple[int, ...], layers: str) -> Path:
    deploy = tmp_path / "deploy.prototxt"
    dims = " ".join(f"dim: {d}" for d in shape)
    deploy.write_text(
        f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}\n'
        + layers
    )
    return deploy


def caffe_and_torch(
    tmp_path: Path, deploy: Path, x: Array, params: dict[str, list[Array]] | None = None
) -> tuple[Array, Array]:
    """The last output of pycaffe and of the torch engine for ``x``, with ``params`` as the
    learned blobs (saved to a caffemodel by pycaffe)."""
    caffe = require_caffe()
    require_torch()
    net = caffe.Net(str(deploy), caffe.TEST)
    for layer, arrays in (params or {}).items():
        for blob, array in zip(net.params[layer], arrays, strict=True):
            blob.data[...] = array
    weights = tmp_path / "tiny.caffemodel"
    net.save(str(weights))
    net.blobs["data"].data[...] = x
    expected = net.forward()[net.outputs[-1]].copy()
    engine = load_engine("torch", deploy, weights, Device.cpu(), 1, None, 1)
    return expected, engine.forward(x).reshape(expected.shape)


def pool_layer(method: str, kernel: int, stride: int, pad: int) -> str:
    return (
        f'layer {{ name: "pool" type: "Pooling" bottom: "data" top: "pool" pooling_param {{ '
        f"pool: {method} kernel_size: {kernel} stride: {stride} pad: {pad} }} }}\n"
    )


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_pooling_drops_a_last_window_that_would_start_in_the_padding(
    tmp_path: Path, method: str
) -> None:
    # H = 5, k = 2, s = 2, p = 1: ceil(5 / 2) + 1 = 4 windows, but the 4th starts at 5 >= H.
    x = np.random.default_rng(1).normal(size=(2, 3, 5, 5)).astype(np.float32)
    deploy = tiny_net(tmp_path, x.shape, pool_layer(method, 2, 2, 1))
    expected, got = caffe_and_torch(tmp_path, deploy, x)
    assert expected.shape == got.shape == (2, 3, 3, 3)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_pooling_without_padding_where_torch_would_drop_a_window(
    tmp_path: Path, method: str
) -> None:
    # H = 7, k = 2, s = 3, p = 0: Caffe keeps the 3rd window (start 6, clipped to one cell);
    # torch's ceil_mode drops it, so the converter pools by hand here.
    x = np.random.default_rng(2).normal(size=(1, 2, 7, 7)).astype(np.float32)
    deploy = tiny_net(tmp_path, x.shape, pool_layer(method, 2, 3, 0))
    expected, got = caffe_and_torch(tmp_path, deploy, x)
    assert expected.shape == got.shape == (1, 2, 3, 3)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_average_pooling_divides_by_the_window_clipped_to_the_padded_input(
    tmp_path: Path,
) -> None:
    # H = 4, k = 3, s = 2, p = 1, input of ones: the corner window [-1, 2) counts 3 x 3 = 9
    # cells (4 real); the last, [3, 6), is clipped to H + p = 5: 2 x 2 = 4 cells (1 real).
    x = np.ones((1, 1, 4, 4), dtype=np.float32)
    deploy = tiny_net(tmp_path, x.shape, pool_layer("AVE", 3, 2, 1))
    expected, got = caffe_and_torch(tmp_path, deploy, x)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7)
    assert got[0, 0, 0, 0] == pytest.approx(4 / 9)
    assert got[0, 0, 2, 2] == pytest.approx(1 / 4)


def test_batchnorm_scale_factor_zero_means_zero_statistics(tmp_path: Path) -> None:
    layers = (
        'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" '
        "batch_norm_param { use_global_stats: true eps: 0.001 } }\n"
    )
    x = np.random.default_rng(3).normal(size=(2, 3, 4, 4)).astype(np.float32)
    deploy = tiny_net(tmp_path, x.shape, layers)
    stats = [np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0]), np.array([0.0])]
    expected, got = caffe_and_torch(tmp_path, deploy, x, {"bn": stats})
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=0)
    np.testing.assert_allclose(got, x / np.sqrt(np.float32(0.001)), rtol=1e-6)


def test_eltwise_sum_applies_each_coeff(tmp_path: Path) -> None:
    layers = (
        'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n'
        'layer { name: "sum" type: "Eltwise" bottom: "data" bottom: "r" top: "sum" '
        "eltwise_param { operation: SUM coeff: 2 coeff: -0.5 } }\n"
    )
    x = np.random.default_rng(4).normal(size=(2, 3, 4, 4)).astype(np.float32)
    deploy = tiny_net(tmp_path, x.shape, layers)
    expected, got = caffe_and_torch(tmp_path, deploy, x)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got, 2 * x - 0.5 * np.maximum(x, 0), rtol=0, atol=1e-6)


def test_unknown_layer_type_names_the_layer_and_type() -> None:
    require_torch()
    from gre.model.engines.torch_convert import build

    net = parse(
        'input: "data" input_dim: 1 input_dim: 3 input_dim: 4 input_dim: 4\n'
        'layer { name: "odd" type: "Frobnicate" bottom: "data" top: "odd" }\n'
    )
    with pytest.raises(EngineError, match=r"'odd' \(Frobnicate\).*not supported"):
        build(net, {})


def test_train_only_layers_are_skipped() -> None:
    require_torch()
    from gre.model.engines.torch_convert import build

    net = parse(
        'input: "data" input_dim: 1 input_dim: 3 input_dim: 4 input_dim: 4\n'
        'layer { name: "odd" type: "Frobnicate" bottom: "data" top: "data" '
        "include { phase: TRAIN } }\n"
        'layer { name: "r" type: "ReLU" bottom: "data" top: "r" include { phase: TEST } }\n'
    )
    module = build(net, {})
    assert [spec.name for spec in module.specs] == ["r"]
    assert module.outputs == ["r"]


def test_blob_shape_mismatch_names_the_layer_and_both_shapes() -> None:
    require_torch()
    from gre.model.engines.torch_convert import build

    net = parse(
        'input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8\n'
        'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
        "convolution_param { num_output: 8 kernel_size: 3 } }\n"
    )
    blobs = [np.zeros((4, 3, 3, 3), np.float32), np.zeros(8, np.float32)]
    with pytest.raises(EngineError, match=r"'conv'.*\(4, 3, 3, 3\), expected \(8, 3, 3, 3\)"):
        build(net, {"conv": blobs})


def test_a_file_that_is_not_a_caffemodel_is_a_value_error_naming_it(tmp_path: Path) -> None:
    jpeg = tmp_path / "photo.caffemodel"
    jpeg.write_bytes(distinct_jpegs(1)[0])
    with pytest.raises(CaffemodelError, match=r"photo\.caffemodel") as info:
        read_weights(jpeg)
    assert isinstance(info.value, ValueError)


def test_caffemodel_reader_matches_pycaffe() -> None:
    caffe = require_caffe()
    deploy, weights = model_files("open_nsfw")
    ours = read_weights(weights)
    net = caffe.Net(str(deploy), caffe.TEST, weights=str(weights))
    assert set(net.params) <= set(ours)
    for layer, blobs in net.params.items():
        for blob, array in zip(blobs, ours[layer], strict=True):
            np.testing.assert_array_equal(array, blob.data)


# ---- bad input ------------------------------------------------------------------------------


def test_a_caffemodel_blob_of_another_shape_names_model_layer_and_both_shapes(
    tmp_path: Path,
) -> None:
    # A real caffemodel (SqueezeNet 1.1's) with one blob rewritten: conv10 keeps 500 of its
    # 1000 filters, the prototxt still says num_output: 1000.
    caffe_pb2 = require_caffe().proto.caffe_pb2
    require_torch()
    deploy, weights = model_files("squeezenet_v1.1")
    net = caffe_pb2.NetParameter()
    net.ParseFromString(weights.read_bytes())
    blob = next(layer for layer in net.layer if layer.name == "conv10").blobs[0]
    assert list(blob.shape.dim) == [1000, 512, 1, 1]
    blob.shape.dim[0] = 500
    del blob.data[500 * 512 :]
    altered = tmp_path / "altered.caffemodel"
    altered.write_bytes(net.SerializeToString())
    with pytest.raises(EngineError) as info:
        load_engine("torch", deploy, altered, Device.cpu(), 1, None, 1000)
    message = str(info.value)
    assert str(deploy) in message
    assert str(altered) in message
    assert "'conv10' (Convolution)" in message
    assert "(500, 512, 1, 1), expected (1000, 512, 1, 1)" in message


def nan_net(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny net whose BatchNorm variance is negative (sqrt -> NaN, in Caffe too), with a
    caffemodel saved by pycaffe."""
    deploy = tiny_net(
        tmp_path,
        (1, 2, 4, 4),
        'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
        "convolution_param { num_output: 2 kernel_size: 1 } }\n"
        'layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "normed" }\n'
        'layer { name: "fc" type: "InnerProduct" bottom: "normed" top: "fc" '
        "inner_product_param { num_output: 3 } }\n"
        'layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }\n',
    )
    caffe = require_caffe()
    net = caffe.Net(str(deploy), caffe.TEST)
    rng = np.random.default_rng(5)
    for layer in ("conv", "fc"):
        for blob in net.params[layer]:
            blob.data[...] = rng.normal(size=blob.data.shape)
    net.params["bn"][0].data[...] = 0.0
    net.params["bn"][1].data[...] = [1.0, -4.0]
    net.params["bn"][2].data[...] = 1.0
    weights = tmp_path / "nan.caffemodel"
    net.save(str(weights))
    return deploy, weights


@pytest.mark.filterwarnings("ignore:invalid value encountered in sqrt")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_nan_output_names_the_model_and_the_first_blob_with_nan(
    tmp_path: Path, precision: str
) -> None:
    require_torch()
    deploy, weights = nan_net(tmp_path)
    engine = load_engine("torch", deploy, weights, Device.cpu(), 1, None, 3, precision)
    x = np.ones((2, 2, 4, 4), dtype=np.float32)
    with pytest.raises(EngineError) as info:
        engine.forward(x)
    message = str(info.value)
    assert str(deploy) in message
    assert f"({precision})" in message
    assert "first blob with NaN is blob 'normed' (top of layer 'bn', BatchNorm)" in message
    x[1, 0, 0, 0] = np.nan
    with pytest.raises(EngineError, match="the input batch has NaN"):
        engine.forward(x)


KEPT = ("prob", "fire9/concat")


def test_the_module_frees_blobs_after_their_last_use_when_told_what_to_keep() -> None:
    torch = require_torch()
    deploy, weights = model_files("squeezenet_v1.1")
    from gre.model.engines.torch_convert import convert

    module = convert(deploy, weights)
    x = torch.from_numpy(photo_batch("squeezenet_v1.1", deploy, 2))
    tops: list[weakref.ref[Tensor]] = []
    with torch.inference_mode():
        every = module(x)
        kept = module(x, lambda name, out: tops.extend(map(weakref.ref, out)), keep=KEPT)
    assert set(kept) == set(KEPT)
    for name in KEPT:
        assert torch.equal(kept[name], every[name])
    alive = {id(ref()) for ref in tops if ref() is not None}
    assert len(tops) > 60
    assert alive == {id(kept[name]) for name in KEPT}


@pytest.mark.parametrize("name", ["bvlc_reference_caffenet", "open_nsfw"])
def test_uint8_crops_normalised_by_the_engine_give_the_same_bits(name: str) -> None:
    """forward_pixels (crops to the device, mean and scales there) == forward of the blob
    NumPy makes; and the classifier sends it the crops, not float32, for classify batches."""
    require_torch()
    from gre.model.classifier import Classifier
    from gre.model.engines import TakesPixels

    deploy, weights = model_files(name)
    config = PreprocessConfig(**ZOO_MODELS.get(name, {}))
    pre = Preprocessor.build(config, read_net_spec(deploy).input_shape)
    images = distinct_jpegs(3)
    pixels = np.stack([pre.pixels(decode_bgr(data)) for data in images])
    assert pixels.dtype == np.uint8
    engine = load_engine("torch", deploy, weights, Device.cpu(), 2, None, 1000)
    assert isinstance(engine, TakesPixels)
    via_pixels = engine.forward_pixels(pixels, pre.normalization)
    np.testing.assert_array_equal(via_pixels, engine.forward(pre.normalization.apply(pixels)))
    classifier = Classifier(engine, pre, apply_softmax=False, decode_threads=2)
    sent: list[np.dtype[Any]] = []
    forward_pixels = engine.forward_pixels

    def spy(pixels: npt.NDArray[Any], normalization: Any) -> Array:
        sent.append(pixels.dtype)
        return forward_pixels(pixels, normalization)

    engine.forward_pixels = spy  # type: ignore[method-assign]
    result = classifier.classify(images, [5, 5, 5])
    classifier.close()
    assert sent == [np.dtype(np.uint8)]
    expected = [tuple(np.argsort(-row, kind="stable")[:5]) for row in via_pixels]
    assert [o.indices for o in result.outcomes] == expected  # type: ignore[union-attr]
