"""gre's Caffe -> PyTorch converter: a deploy prototxt plus a caffemodel as an ``nn.Module``.

The prototxt is read with gre's own parser (:mod:`gre.model.prototxt`), the weights with gre's
own protobuf schema (:mod:`gre.model.caffemodel`); no pycaffe. Conversion is table-driven:
:data:`gre.model.engines.torch_layers.BUILDERS` maps each Caffe layer type to one builder.
The resulting :class:`CaffeModule` runs the layers in prototxt order over a dict of named
blobs, as ``caffe.Net`` does at TEST (src/caffe/net.cpp), and returns every blob.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from gre.model.blobs import in_test_phase
from gre.model.caffemodel import CaffemodelError, read_weights
from gre.model.engines import EngineError
from gre.model.engines.torch_layers import BUILDERS
from gre.model.engines.torch_params import Array, LayerSpec, Op, Shape, nums
from gre.model.prototxt import Message, PrototxtError, Value, parse

#: Legacy (V1) prototxt ``layers { type: ENUM }`` names, mapped to today's type strings.
V1_NAMES = {
    "CONCAT": "Concat", "CONVOLUTION": "Convolution", "DROPOUT": "Dropout",
    "ELTWISE": "Eltwise", "FLATTEN": "Flatten", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "POOLING": "Pooling", "RELU": "ReLU", "SIGMOID": "Sigmoid", "SOFTMAX": "Softmax",
    "SPLIT": "Split", "TANH": "TanH",
}  # fmt: skip

#: Called after each layer with its name and top tensors (e.g. to record every layer's output).
LayerHook = Callable[[str, list[Tensor]], None]


@dataclass(frozen=True)
class InputBlob:
    """A net input: the blob ``name`` and its declared ``(N, C, H, W)`` ``shape``."""

    name: str
    shape: Shape


def _messages(values: list[Value]) -> list[Message]:
    return [v for v in values if isinstance(v, dict)]


def _strings(message: Message, field: str) -> tuple[str, ...]:
    return tuple(str(v) for v in message.get(field, []))


def layer_specs(net: Message) -> tuple[list[InputBlob], list[LayerSpec]]:
    """The net's declared inputs (``input`` + ``input_dim`` / ``input_shape``, and Input
    layers' ``input_param.shape``) and its TEST-phase layers in order, Input layers included.

    Raises:
        EngineError: an input without a shape.
    """
    inputs: list[InputBlob] = []
    names = _strings(net, "input")
    dims = [int(d) for d in nums(net, "input_dim")]
    shapes = [tuple(int(d) for d in nums(m, "dim")) for m in _messages(net.get("input_shape", []))]
    for index, name in enumerate(names):
        shape = shapes[index] if index < len(shapes) else tuple(dims[4 * index : 4 * index + 4])
        if not shape:
            raise EngineError(f"net input {name!r} has no input_dim or input_shape")
        inputs.append(InputBlob(name, shape))
    specs: list[LayerSpec] = []
    for layer in _messages(net.get("layer", [])) or _messages(net.get("layers", [])):
        if not in_test_phase(layer):
            continue
        kind = str(layer.get("type", ["?"])[-1])
        spec = LayerSpec(
            name=str(layer.get("name", [f"layer{len(specs)}"])[-1]),
            type=V1_NAMES.get(kind, kind),
            bottoms=_strings(layer, "bottom"),
            tops=_strings(layer, "top"),
            message=layer,
        )
        if spec.type == "Input":
            declared = _messages(spec.param("input_param").get("shape", []))
            for index, top in enumerate(spec.tops):
                dims_message = declared[min(index, len(declared) - 1)] if declared else {}
                shape = tuple(int(d) for d in nums(dims_message, "dim"))
                if not shape:
                    raise spec.error(f"top {top!r} has no input_param.shape")
                inputs.append(InputBlob(top, shape))
        specs.append(spec)
    return inputs, specs


def net_outputs(inputs: list[InputBlob], specs: list[LayerSpec]) -> list[str]:
    """Caffe's net outputs (``Net::Init``): blobs produced and never consumed by a later layer,
    in name order (Caffe keeps them in a ``std::set``); an in-place top counts as produced."""
    available = {blob.name for blob in inputs}
    for spec in specs:
        available.difference_update(spec.bottoms)
        available.update(spec.tops)
    return sorted(available)


class CaffeModule(nn.Module):
    """A converted Caffe net.

    ``forward`` takes the input batch (or ``{input name: tensor}`` for several inputs) and
    returns every blob by name, each blob's value being its last writer's (an in-place layer's
    top replaces its bottom, as in Caffe); with ``keep``, only those blobs, each other blob
    being freed after its last use (peak memory: the live blobs, not all of them). ``inputs``
    are the input blob names, ``outputs`` Caffe's net outputs (:func:`net_outputs`),
    ``blob_names`` every blob, ``blob_shapes`` one image's shape of each (as ``net.blobs``,
    in the order blobs first appear). The module is float32 until :meth:`set_precision`.
    """

    def __init__(
        self,
        inputs: list[InputBlob],
        specs: list[LayerSpec],
        ops: list[Op],
        name: str,
        blob_shapes: Mapping[str, tuple[int, ...]] | None = None,
    ) -> None:
        super().__init__()
        self.input_blobs = inputs
        self.inputs = [blob.name for blob in inputs]
        self.specs = [spec for spec in specs if spec.type != "Input"]
        self.ops = nn.ModuleList(ops)  # registered, so .to(device) moves every weight
        self.outputs = net_outputs(inputs, specs)
        self.blob_names = set(self.inputs) | {top for spec in specs for top in spec.tops}
        self.blob_shapes = dict(blob_shapes or {})
        self.net_name = name
        self.dtype = torch.float32
        #: Per layer, the blobs it reads or writes for the last time.
        last: dict[str, int] = {}
        for index, spec in enumerate(self.specs):
            last.update((blob, index) for blob in (*spec.bottoms, *spec.tops))
        self._last_used = [[b for b, i in last.items() if i == index] for index in range(len(ops))]

    def set_precision(self, dtype: torch.dtype, channels_last: bool) -> CaffeModule:
        """Run in ``dtype`` (float32, float16 or bfloat16) from now on, each op as its
        :data:`~gre.model.engines.torch_params.Compute` says; ``channels_last``: 4-D weights in
        NHWC memory order (the layout tensor cores and oneDNN's bf16 kernels want; the
        caller passes inputs likewise). Returns the module."""
        self.dtype = dtype
        for _, op in self.layers():
            op.set_dtype(dtype, channels_last)
        return self

    def layers(self) -> list[tuple[LayerSpec, Op]]:
        """Each layer's spec with its op, in run order (Input layers excluded)."""
        ops = [op for op in self.ops if isinstance(op, Op)]  # typed: every op is an Op
        return list(zip(self.specs, ops, strict=True))

    def forward(
        self,
        data: Tensor | Mapping[str, Tensor],
        on_layer: LayerHook | None = None,
        keep: Collection[str] | None = None,
    ) -> dict[str, Tensor]:
        blobs = dict(data) if isinstance(data, Mapping) else {self.inputs[0]: data}
        missing = set(self.inputs) - set(blobs)
        if missing:
            raise EngineError(f"net {self.net_name!r}: inputs {sorted(missing)} not given")
        for spec, op, last_used in zip(self.specs, self.ops, self._last_used, strict=True):
            tops = op(*(blobs[bottom] for bottom in spec.bottoms))
            blobs.update(zip(spec.tops, tops, strict=True))
            if on_layer is not None:
                on_layer(spec.name, tops)
            if keep is not None:
                for blob in last_used:
                    if blob not in keep:
                        del blobs[blob]
        return blobs if keep is None else {name: blobs[name] for name in keep}


def build(net: Message, weights: Mapping[str, list[Array]]) -> CaffeModule:
    """Build the module for a parsed prototxt and ``{layer name: blobs}``.

    Each layer's bottom shapes come from running the layers before it on a zero batch of one
    (the declared input shape with N = 1), so builders can check blob shapes exactly.

    Raises:
        EngineError: an unknown layer type (naming the layer and type), a blob that is not
            produced before it is used, blobs whose shapes the prototxt contradicts, or
            parameters Caffe would also reject.
    """
    inputs, specs = layer_specs(net)
    if not inputs:
        raise EngineError("the net declares no input (input/input_dim, input_shape, Input)")
    probe: dict[str, Tensor] = {
        blob.name: torch.zeros((1, *blob.shape[1:]), dtype=torch.float32) for blob in inputs
    }
    ops: list[Op] = []
    for spec in specs:
        if spec.type == "Input":
            continue
        builder = BUILDERS.get(spec.type)
        if builder is None:
            raise spec.error(f"layer type {spec.type!r} is not supported by the torch engine")
        unknown = [bottom for bottom in spec.bottoms if bottom not in probe]
        if unknown or not spec.bottoms:
            raise spec.error(f"bottom blobs {unknown or '(none)'} are not produced before it")
        shapes = [tuple(probe[bottom].shape) for bottom in spec.bottoms]
        op = builder(spec, shapes, list(weights.get(spec.name, [])))
        try:
            with torch.inference_mode():
                tops = op(*(probe[bottom] for bottom in spec.bottoms))
        except RuntimeError as exc:  # torch's shape errors
            raise spec.error(f"cannot run on bottoms of shapes {shapes}: {exc}") from exc
        if len(tops) != len(spec.tops):
            raise spec.error(f"makes {len(tops)} tops, the prototxt names {len(spec.tops)}")
        probe.update(zip(spec.tops, tops, strict=True))
        ops.append(op)
    blob_shapes = {name: tuple(int(d) for d in blob.shape[1:]) for name, blob in probe.items()}
    return CaffeModule(inputs, specs, ops, str(net.get("name", [""])[-1]), blob_shapes)


def convert(deploy: Path, weights: Path) -> CaffeModule:
    """Convert ``deploy`` (prototxt) + ``weights`` (caffemodel) into a float32 CPU module in
    eval mode.

    Raises:
        OSError: a file cannot be read.
        EngineError: the prototxt or caffemodel is invalid, or :func:`build` rejects the net;
            the message names the files.
    """
    try:
        net = parse(deploy.read_text(encoding="utf-8"))
        blobs = read_weights(weights)
    except (PrototxtError, CaffemodelError) as exc:
        raise EngineError(f"cannot convert {deploy} + {weights}: {exc}") from exc
    try:
        module = build(net, blobs)
    except EngineError as exc:
        raise EngineError(f"{deploy} + {weights}: {exc}") from exc
    return module.eval()
