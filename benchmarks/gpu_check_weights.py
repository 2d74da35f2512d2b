"""Seeded random caffemodels for the zoo nets without pycaffe, for machines that lack it.

benchmarks/zoo.py makes its weights with pycaffe, which a GPU machine may not have (and its
cache, 233 MB for CaffeNet alone, is too big to bring along). :func:`write_random_weights`
makes the same kind of weights with gre's own pieces instead: the prototxt parser, the torch
converter's layer builders (for every layer's bottom shapes and the calibration forward) and
gre's caffemodel schema (:mod:`gre.model.caffemodel`) to write the file, which pycaffe and
OpenCV read too. It follows zoo.py's recipe step for step (same generator, same seed, same
draws in the same order, LSUV-style rescaling on the same calibration image, the same final
logit scaling), so its weights equal zoo.py's up to float32 rounding of the calibration
gains; only the forward that measures the gains is torch's instead of Caffe's.

:func:`weights_for` picks the source: zoo.py's cached file when there is one, zoo.py with
pycaffe when pycaffe is importable, else this writer (cached likewise under
``${GRE_CACHE_DIR:-~/.cache/gre}/gre-weights-<key>/``).
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch

from benchmarks import zoo
from benchmarks.zoo import (
    LOGIT_STD,
    PHOTO_STD,
    ZOO_MODELS,
    cache_root,
    calibration_image,
    weights_path,
    zoo_weights,
)
from gre.model.caffemodel import _NetParameter  # gre's own schema: the fields Caffe stores
from gre.model.engines import EngineError, caffe_importable
from gre.model.engines.torch_convert import layer_specs
from gre.model.engines.torch_layers import BUILDERS
from gre.model.engines.torch_params import Array, LayerSpec, Shape, axis_of, flag, num, pair
from gre.model.prototxt import parse

#: Where the weights come from (:func:`weights_for`).
SOURCES = ("auto", "zoo", "gre")


def param_shapes(spec: LayerSpec, bottoms: list[Shape]) -> list[Shape]:
    """The learned blobs' shapes of one layer, as Caffe stores them (``[]``: none).

    Raises:
        ValueError: a layer type with parameters this writer does not fill.
    """
    if spec.type == "Convolution":
        p = spec.param("convolution_param")
        outputs, group = int(num(p, "num_output", 0)), int(num(p, "group", 1))
        kernel = pair(spec, p, "kernel", 0) if "kernel_h" in p else pair(spec, p, "kernel_size", 0)
        weight: Shape = (outputs, bottoms[0][1] // group, *kernel)
        return [weight, (outputs,)] if flag(p, "bias_term", True) else [weight]
    if spec.type == "InnerProduct":
        p = spec.param("inner_product_param")
        axis = axis_of(spec, int(num(p, "axis", 1)), len(bottoms[0]))
        inputs, outputs = math.prod(bottoms[0][axis:]), int(num(p, "num_output", 0))
        weight = (inputs, outputs) if flag(p, "transpose", False) else (outputs, inputs)
        return [weight, (outputs,)] if flag(p, "bias_term", True) else [weight]
    if spec.type == "BatchNorm":
        channels = bottoms[0][1]
        return [(channels,), (channels,), (1,)]
    if spec.type == "Scale":
        p = spec.param("scale_param")
        shape = bottoms[0]
        axis = axis_of(spec, int(num(p, "axis", 1)), len(shape))
        count = int(num(p, "num_axes", 1))
        scale = shape[axis:] if count == -1 else shape[axis : axis + count]
        if len(bottoms) > 1:
            scale = bottoms[1]
        wanted = [] if len(bottoms) > 1 else [scale]
        return wanted + ([scale] if flag(p, "bias_term", False) else [])
    if spec.type in ("PReLU", "Deconvolution"):
        raise ValueError(f"layer {spec.name!r} of type {spec.type} has parameters")
    return []


def random_blobs(spec: LayerSpec, shapes: list[Shape], rng: np.random.Generator) -> list[Array]:
    """zoo.py's draws for one layer (module docstring there), before calibration."""
    if not shapes:
        return []
    if spec.type in ("Convolution", "InnerProduct"):
        fan_in = math.prod(shapes[0][1:])
        blobs = [rng.normal(0.0, np.sqrt(2.0 / fan_in), shapes[0]).astype(np.float32)]
        if len(shapes) > 1:
            blobs.append(rng.normal(0.0, 0.1, shapes[1]).astype(np.float32))
        return blobs
    if spec.type == "BatchNorm":
        return [
            rng.normal(0.0, 0.2, shapes[0]).astype(np.float32),
            rng.uniform(0.5, 2.0, shapes[1]).astype(np.float32),
            np.ones(shapes[2], dtype=np.float32),
        ]
    # Scale: blob 0 U(0.5, 1.5), blob 1 N(0, 0.2), by position as zoo.py draws them.
    blobs = [rng.uniform(0.5, 1.5, shapes[0]).astype(np.float32)]
    if len(shapes) > 1:
        blobs.append(rng.normal(0.0, 0.2, shapes[1]).astype(np.float32))
    return blobs


def _chw(shape: Shape) -> tuple[int, int, int]:
    """``(N, C, H, W)`` -> ``(C, H, W)``.

    Raises:
        ValueError: not a 4-D input.
    """
    if len(shape) != 4:
        raise ValueError(f"the net input's shape {shape} is not (N, C, H, W)")
    return shape[1], shape[2], shape[3]


def random_net_weights(
    deploy: Path, seed: int, input_std: float
) -> list[tuple[LayerSpec, list[Array]]]:
    """Every parametrised layer of ``deploy`` with its calibrated blobs (zoo.py's recipe):
    each Convolution / InnerProduct rescaled so that its top has standard deviation 1 on the
    calibration image, then the last one before the Softmax so that the logits have
    :data:`~benchmarks.zoo.LOGIT_STD`."""
    inputs, specs = layer_specs(parse(deploy.read_text(encoding="utf-8")))
    rng = np.random.default_rng(seed)
    first = inputs[0]
    probe = {
        blob.name: torch.from_numpy(calibration_image(_chw(first.shape), seed, input_std))[None]
        if blob is first
        else torch.zeros((1, *blob.shape[1:]))
        for blob in inputs
    }
    filled: list[tuple[LayerSpec, list[Array]]] = []
    softmax_bottom: str | None = None
    with torch.inference_mode():
        for spec in specs:
            if spec.type == "Input":
                continue
            bottoms = [tuple(probe[name].shape) for name in spec.bottoms]
            blobs = random_blobs(spec, param_shapes(spec, bottoms), rng)
            tops = BUILDERS[spec.type](spec, bottoms, blobs)(*(probe[b] for b in spec.bottoms))
            if spec.type in ("Convolution", "InnerProduct"):
                # Linear in (weight, bias): scaling both scales the top by the same gain.
                gain = np.float32(1.0 / max(float(tops[0].std(unbiased=False)), 1e-6))
                blobs = [blob * gain for blob in blobs]
                tops = [top * float(gain) for top in tops]
            if blobs:
                filled.append((spec, blobs))
            if spec.type == "Softmax":
                softmax_bottom = spec.bottoms[0]
            probe.update(zip(spec.tops, tops, strict=True))
    if softmax_bottom is None:
        raise ValueError(f"{deploy}: the net has no Softmax layer")
    last = max(
        (i for i, (s, _) in enumerate(filled) if s.type in ("Convolution", "InnerProduct")),
        default=None,
    )
    if last is None:
        raise ValueError(f"{deploy} has no Convolution or InnerProduct layer")
    gain = np.float32(LOGIT_STD / max(float(probe[softmax_bottom].std(unbiased=False)), 1e-6))
    filled[last] = (filled[last][0], [blob * gain for blob in filled[last][1]])
    return filled


def serialize(name: str, layers: list[tuple[LayerSpec, list[Array]]]) -> bytes:
    """A NetParameter with each layer's name, type and blobs (``shape`` + float ``data``):
    the packed floats go in as one length-delimited run, which is the wire form of Caffe's
    ``repeated float data = 5 [packed = true]``."""
    net = _NetParameter(name=name)
    for spec, blobs in layers:
        layer = net.layer.add(name=spec.name, type=spec.type)
        for array in blobs:
            blob = layer.blobs.add()
            blob.shape.dim.extend(int(d) for d in array.shape)
            blob.data.append(np.ascontiguousarray(array, dtype="<f4").tobytes())
    data: bytes = net.SerializeToString()
    return data


def gre_weights_path(deploy: Path, name: str) -> Path:
    """Where :func:`write_random_weights`'s file for this deploy text and this code lives."""
    source = Path(__file__).read_bytes() + Path(zoo.__file__).read_bytes()
    digest = hashlib.sha256(deploy.read_bytes() + b"\0" + source).hexdigest()[:16]
    return cache_root() / f"gre-weights-{digest}" / f"{name}.caffemodel"


def write_random_weights(deploy: Path, name: str) -> Path:
    """The cached pycaffe-free caffemodel for ``deploy`` (``name`` one of
    :data:`~benchmarks.zoo.ZOO_MODELS`), made now if missing (written beside, then renamed)."""
    path = gre_weights_path(deploy, name)
    if path.is_file():
        return path
    settings = ZOO_MODELS[name]
    input_std = PHOTO_STD * settings.get("raw_scale", 255.0) / 255.0
    input_std *= settings.get("input_scale", 1.0)
    data = serialize(name, random_net_weights(deploy, zlib.crc32(name.encode()), input_std))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{name}.", suffix=".caffemodel")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def weights_for(deploy: Path, name: str, source: str = "auto") -> tuple[Path, str]:
    """``(caffemodel, where it came from)`` for zoo net ``name``. ``source``: ``"zoo"``
    (benchmarks/zoo.py: its cache, else pycaffe), ``"gre"`` (:func:`write_random_weights`)
    or ``"auto"`` (zoo.py's cached file if present, else pycaffe if importable, else gre's).

    Raises:
        RuntimeError: ``"zoo"`` without a cached file or pycaffe.
        ValueError, EngineError: the net cannot be filled.
    """
    if source not in SOURCES:
        raise ValueError(f"weights source {source!r} is not one of {', '.join(SOURCES)}")
    cached = weights_path(deploy, name)
    if source == "zoo" or (source == "auto" and (cached.is_file() or caffe_importable())):
        how = "zoo.py cache" if cached.is_file() else "zoo.py with pycaffe"
        return zoo_weights(deploy, name), how
    try:
        return write_random_weights(deploy, name), "gre writer (no pycaffe)"
    except KeyError as exc:  # a layer type the torch builders do not know
        raise EngineError(f"{deploy}: no torch builder for layer type {exc}") from exc
