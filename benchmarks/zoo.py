"""Caffe model zoo architectures with seeded random weights, for parity tests and benchmarks.

../shared/models holds deploy prototxts without weights. :func:`zoo_weights` makes a
caffemodel for one with pycaffe -- ``caffe.Net(deploy, caffe.TEST)``, every parameter blob
filled from a seeded generator, ``net.save`` -- and caches it under
``${GRE_CACHE_DIR:-~/.cache/gre}/zoo-<key>/<name>.caffemodel``, where ``key`` hashes the deploy
text and this file, so a later run (or the benchmark) reuses it and an edit here rebuilds it
(deleting the model's stale copies).

The weights are meant to make every layer do real work, not to classify anything:

* Convolution / InnerProduct: He-normal weights (std ``sqrt(2 / fan_in)``) and small biases,
  then rescaled, layer by layer, so that the layer's output on a seeded calibration image has
  standard deviation 1 (data-dependent initialisation as in LSUV): activations stay O(1)
  through 20-50 layers, so absolute tolerances mean the same at every depth. The calibration
  image is smooth seeded noise with the standard deviation of the net's preprocessed photos
  (:data:`PHOTO_STD` levels times ``raw_scale / 255 * input_scale``).
* BatchNorm: running mean N(0, 0.2), variance U(0.5, 2), moving-average factor 1 (Caffe
  divides the stored statistics by it).
* Scale: gamma U(0.5, 1.5), beta N(0, 0.2).
* Finally the last parametrised layer before the Softmax is scaled so that the pre-softmax
  blob has standard deviation :data:`LOGIT_STD` on the calibration image; with ReLU, pooling
  and linear layers in between this is exact (they are positively homogeneous). The outputs
  are then far from uniform (:func:`check_not_uniform`).

Nothing here imports pytest, so benchmarks can use it too.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

#: The deploy prototxts under ../shared/models this module can fill, with each model's
#: preprocessing in gre's ``[preprocess]`` terms (its zoo page's Caffe conventions).
ZOO_MODELS: dict[str, dict[str, Any]] = {
    "bvlc_reference_caffenet": {"mean": [104.0, 117.0, 123.0]},
    "bvlc_alexnet": {"mean": [104.0, 117.0, 123.0]},
    "bvlc_googlenet": {"mean": [104.0, 117.0, 123.0]},
    "squeezenet_v1.0": {"mean": [104.0, 117.0, 123.0]},
    "squeezenet_v1.1": {"mean": [104.0, 117.0, 123.0]},
    "mobilenet_v1": {"mean": [103.94, 116.78, 123.68], "input_scale": 0.017},
    "mobilenet_v2": {"mean": [103.94, 116.78, 123.68], "input_scale": 0.017},
}
#: Standard deviation of a mean-subtracted photo, in pixel levels (0-255).
PHOTO_STD = 60.0
#: Standard deviation of the pre-softmax blob on the calibration image.
LOGIT_STD = 4.0
_PARAM_LAYERS = ("Convolution", "InnerProduct", "Deconvolution")


def import_caffe() -> ModuleType:
    """``import caffe`` quietly; a RuntimeError that says to run ``make test`` if it fails."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        import caffe
    except ImportError as exc:
        raise RuntimeError(
            f"pycaffe is not importable ({exc}): run `make test`, which builds it "
            "(scripts/build-caffe.sh) and points the venv at it"
        ) from exc
    module: ModuleType = caffe
    return module


def cache_root() -> Path:
    """``${GRE_CACHE_DIR:-~/.cache/gre}``."""
    return Path(os.environ.get("GRE_CACHE_DIR") or "~/.cache/gre").expanduser()


def weights_path(deploy: Path, name: str) -> Path:
    """Where :func:`zoo_weights` keeps ``name``'s caffemodel for this deploy text."""
    digest = hashlib.sha256(deploy.read_bytes() + b"\0" + Path(__file__).read_bytes())
    return cache_root() / f"zoo-{digest.hexdigest()[:16]}" / f"{name}.caffemodel"


def zoo_weights(deploy: Path, name: str) -> Path:
    """The cached random-weight caffemodel for ``deploy`` (``name`` one of
    :data:`ZOO_MODELS`), made now if missing.

    The file appears atomically (written beside it, then renamed), so concurrent or
    interrupted runs never see half a model.
    """
    path = weights_path(deploy, name)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{name}.", suffix=".caffemodel")
    os.close(fd)
    try:
        settings = ZOO_MODELS[name]
        input_std = PHOTO_STD * settings.get("raw_scale", 255.0) / 255.0
        input_std *= settings.get("input_scale", 1.0)
        make_weights(deploy, Path(tmp), zlib.crc32(name.encode()), input_std)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _prune_stale(path)
    return path


def _prune_stale(current: Path) -> None:
    """Delete this model's caffemodels made by other versions of the deploy text or of this
    file (AlexNet's is 243 MB); they are rebuilt in seconds if wanted again."""
    for stale in cache_root().glob(f"zoo-*/{current.name}"):
        if stale != current:
            stale.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                stale.parent.rmdir()  # only when empty


def calibration_image(
    shape: tuple[int, int, int], seed: int, std: float
) -> npt.NDArray[np.float32]:
    """A smooth, seeded, image-like ``(C, H, W)`` input: 8x8 normal noise upsampled, ~``std``."""
    channels, height, width = shape
    coarse = np.random.default_rng(seed).normal(0, std, (8, 8, channels)).astype(np.float32)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.asarray(smooth, dtype=np.float32).reshape(height, width, channels).transpose(2, 0, 1)


def softmax_input(net: Any) -> str:
    """The bottom blob of the net's (last) Softmax layer: the pre-softmax logits."""
    names = list(net._layer_names)
    for index in range(len(net.layers) - 1, -1, -1):
        if net.layers[index].type == "Softmax":
            return str(net.bottom_names[names[index]][0])
    raise ValueError("the net has no Softmax layer")


def make_weights(deploy: Path, out: Path, seed: int, input_std: float) -> None:
    """Fill every parameter of ``deploy`` (see the module docstring) and save to ``out``;
    calibrate on a seeded image-like input of standard deviation ``input_std`` (that of the
    net's preprocessed photos)."""
    caffe = import_caffe()
    caffe.set_mode_cpu()
    net = caffe.Net(str(deploy), caffe.TEST)
    rng = np.random.default_rng(seed)
    data = net.inputs[0]
    shape = net.blobs[data].data.shape[1:]
    net.blobs[data].reshape(1, *shape)
    net.reshape()
    net.blobs[data].data[0] = calibration_image(shape, seed, input_std)
    names = list(net._layer_names)
    last_param: int | None = None
    for index, layer in enumerate(net.layers):
        blobs = layer.blobs
        if layer.type in _PARAM_LAYERS:
            weight = blobs[0].data
            fan_in = int(np.prod(weight.shape[1:]))
            weight[...] = rng.normal(0.0, np.sqrt(2.0 / fan_in), weight.shape)
            if len(blobs) > 1:
                blobs[1].data[...] = rng.normal(0.0, 0.1, blobs[1].data.shape)
            net._forward(index, index)
            top = net.blobs[net.top_names[names[index]][0]].data
            gain = 1.0 / max(float(top.std()), 1e-6)
            for blob in blobs:
                blob.data[...] *= gain
            top *= gain
            last_param = index
            continue
        if layer.type == "BatchNorm":
            blobs[0].data[...] = rng.normal(0.0, 0.2, blobs[0].data.shape)
            blobs[1].data[...] = rng.uniform(0.5, 2.0, blobs[1].data.shape)
            blobs[2].data[...] = 1.0
        elif layer.type == "Scale":
            blobs[0].data[...] = rng.uniform(0.5, 1.5, blobs[0].data.shape)
            if len(blobs) > 1:
                blobs[1].data[...] = rng.normal(0.0, 0.2, blobs[1].data.shape)
        elif len(blobs):
            raise ValueError(f"layer {names[index]!r} of type {layer.type} has parameters")
        net._forward(index, index)
    if last_param is None:
        raise ValueError(f"{deploy} has no Convolution or InnerProduct layer")
    logits = net.blobs[softmax_input(net)].data
    gain = LOGIT_STD / max(float(logits.std()), 1e-6)
    for blob in net.layers[last_param].blobs:
        blob.data[...] *= gain
    net.save(str(out))


def check_not_uniform(probabilities: npt.NDArray[np.float32]) -> None:
    """Each row's top-1 probability is well above uniform: at least ``min(10 / K, (1 + 1 / K)
    / 2)`` (0.01 for 1000 classes, 0.75 for 2)."""
    classes = probabilities.shape[1]
    top1 = probabilities.max(axis=1)
    floor = min(10.0 / classes, (1.0 + 1.0 / classes) / 2.0)
    if not (top1 >= floor).all():
        raise AssertionError(f"near-uniform outputs: top-1 {top1} with {classes} classes")
