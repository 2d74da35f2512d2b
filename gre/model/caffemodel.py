"""Read a binary ``.caffemodel`` (a serialized NetParameter) without pycaffe.

Only the fields needed to get each layer's learned blobs are declared, with caffe.proto's
numbers: ``NetParameter.layer`` (100, LayerParameter: name 1, type 2, blobs 7) and the legacy
``NetParameter.layers`` (2, V1LayerParameter: name 4, type 5 as an enum, blobs 6). Other fields
are skipped by protobuf as unknown.

``BlobProto.data`` (5) and ``double_data`` (8) are ``[packed = true]`` in caffe.proto, so on the
wire they are one length-delimited run of little-endian floats: declaring them as ``bytes``
lets NumPy view the run directly (AlexNet's 61 M weights in a fraction of a second) instead of
building a Python float per value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

Array = npt.NDArray[np.float32]

#: V1LayerParameter.LayerType values (caffe.proto) of the layers that carry blobs or that a
#: deploy net commonly has, mapped to today's type strings.
V1_TYPES = {
    3: "Concat", 4: "Convolution", 6: "Dropout", 8: "Flatten", 14: "InnerProduct", 15: "LRN",
    17: "Pooling", 18: "ReLU", 19: "Sigmoid", 20: "Softmax", 22: "Split", 23: "TanH",
    25: "Eltwise", 39: "Deconvolution",
}  # fmt: skip


class CaffemodelError(ValueError):
    """The file is not a caffemodel, or one of its blobs is malformed."""


@dataclass(frozen=True)
class CaffemodelLayer:
    """One layer of a caffemodel: its ``name``, ``type`` (``"V1:<n>"`` for a legacy enum value
    not in :data:`V1_TYPES`) and learned ``blobs`` in their stored shapes (a legacy blob without
    a ``shape`` field is 4-D ``(num, channels, height, width)``)."""

    name: str
    type: str
    blobs: list[Array]


def _net_parameter_class() -> Any:
    f = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="gre_caffemodel.proto", package="gre_cm")

    def add(message: Any, name: str, number: int, kind: int, repeated: bool = False,
            type_name: str = "") -> None:  # fmt: skip
        label = f.LABEL_REPEATED if repeated else f.LABEL_OPTIONAL
        field = message.field.add(name=name, number=number, type=kind, label=label)
        if type_name:
            field.type_name = type_name

    shape = file.message_type.add(name="BlobShape")
    add(shape, "dim", 1, f.TYPE_INT64, repeated=True)
    blob = file.message_type.add(name="BlobProto")
    add(blob, "shape", 7, f.TYPE_MESSAGE, type_name=".gre_cm.BlobShape")
    add(blob, "data", 5, f.TYPE_BYTES, repeated=True)  # packed floats, see the module doc
    add(blob, "double_data", 8, f.TYPE_BYTES, repeated=True)
    for number, name in enumerate(("num", "channels", "height", "width"), start=1):
        add(blob, name, number, f.TYPE_INT32)
    layer = file.message_type.add(name="LayerParameter")
    add(layer, "name", 1, f.TYPE_STRING)
    add(layer, "type", 2, f.TYPE_STRING)
    add(layer, "blobs", 7, f.TYPE_MESSAGE, repeated=True, type_name=".gre_cm.BlobProto")
    v1 = file.message_type.add(name="V1LayerParameter")
    add(v1, "name", 4, f.TYPE_STRING)
    add(v1, "type", 5, f.TYPE_INT32)  # an enum on the wire is a varint
    add(v1, "blobs", 6, f.TYPE_MESSAGE, repeated=True, type_name=".gre_cm.BlobProto")
    net = file.message_type.add(name="NetParameter")
    add(net, "name", 1, f.TYPE_STRING)
    add(net, "layers", 2, f.TYPE_MESSAGE, repeated=True, type_name=".gre_cm.V1LayerParameter")
    add(net, "layer", 100, f.TYPE_MESSAGE, repeated=True, type_name=".gre_cm.LayerParameter")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("gre_cm.NetParameter"))


_NetParameter = _net_parameter_class()


def _blob_array(blob: Any, where: str) -> Array:
    """A BlobProto as float32 in its stored shape; raises CaffemodelError naming ``where``."""
    if blob.data:
        values = np.frombuffer(b"".join(blob.data), dtype="<f4")
    elif blob.double_data:
        values = np.frombuffer(b"".join(blob.double_data), dtype="<f8")
    else:
        values = np.empty(0, dtype=np.float32)
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:  # the legacy 4-D fields; Caffe's defaults are num = channels = height = width = 0
        shape = (blob.num, blob.channels, blob.height, blob.width)
    if int(np.prod(shape)) != values.size:
        raise CaffemodelError(
            f"{where}: blob shape {shape} does not match its {values.size} values"
        )
    return values.astype(np.float32).reshape(shape)  # astype copies: writable, native order


def read_layers(path: Path) -> list[CaffemodelLayer]:
    """Every layer of the caffemodel at ``path``, in file order (``layer``, then ``layers``).

    Raises:
        OSError: the file cannot be read.
        CaffemodelError: the bytes are not a NetParameter, it has no layers, or a blob's shape
            and value count disagree; the message names the file.
    """
    net = _NetParameter()
    try:
        net.ParseFromString(path.read_bytes())
    except Exception as exc:  # protobuf raises DecodeError and, for some inputs, others
        raise CaffemodelError(f"{path} is not a Caffe caffemodel (NetParameter): {exc}") from exc
    if not (net.layer or net.layers):
        raise CaffemodelError(f"{path} is not a Caffe caffemodel: it has no layers")
    layers = []
    for layer in net.layer:
        where = f"{path}: layer {layer.name!r}"
        layers.append(
            CaffemodelLayer(layer.name, layer.type, [_blob_array(b, where) for b in layer.blobs])
        )
    for v1 in net.layers:
        where = f"{path}: layer {v1.name!r}"
        kind = V1_TYPES.get(v1.type, f"V1:{v1.type}")
        layers.append(CaffemodelLayer(v1.name, kind, [_blob_array(b, where) for b in v1.blobs]))
    return layers


def read_weights(path: Path) -> dict[str, list[Array]]:
    """``{layer name: [blobs]}`` of the caffemodel at ``path``.

    A name stored twice keeps its last copy, as Caffe's ``CopyTrainedLayersFrom`` (which copies
    every source layer onto the target layer of that name in turn) ends up with.

    Raises:
        OSError, CaffemodelError: as :func:`read_layers`.
    """
    return {layer.name: layer.blobs for layer in read_layers(path)}
