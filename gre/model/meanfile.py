"""Load a mean file: Caffe's ``.binaryproto`` (a BlobProto message) or a NumPy ``.npy``.

Reading a ``.binaryproto`` must not need pycaffe, so this module declares the few BlobProto
fields it uses (same numbers and types as caffe.proto) and decodes them with ``protobuf``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

Array = npt.NDArray[np.float32]


def _blob_proto_class() -> Any:
    f = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="gre_blob.proto", package="gre_caffe")
    shape = file.message_type.add(name="BlobShape")
    shape.field.add(name="dim", number=1, type=f.TYPE_INT64, label=f.LABEL_REPEATED)
    blob = file.message_type.add(name="BlobProto")
    blob.field.add(
        name="shape", number=7, type=f.TYPE_MESSAGE, label=f.LABEL_OPTIONAL,
        type_name=".gre_caffe.BlobShape",
    )  # fmt: skip
    blob.field.add(name="data", number=5, type=f.TYPE_FLOAT, label=f.LABEL_REPEATED)
    blob.field.add(name="double_data", number=8, type=f.TYPE_DOUBLE, label=f.LABEL_REPEATED)
    for number, name in enumerate(("num", "channels", "height", "width"), start=1):
        blob.field.add(name=name, number=number, type=f.TYPE_INT32, label=f.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("gre_caffe.BlobProto"))


_BlobProto = _blob_proto_class()


class MeanFileError(ValueError):
    """The mean file is not a readable BlobProto or ``.npy`` array of a usable shape."""


def blob_proto_to_array(data: bytes) -> Array:
    """Decode a serialized BlobProto into an array, as ``caffe.io.blobproto_to_array``.

    Returns the blob's shape with a leading ``num == 1`` dropped, so a mean image comes back
    ``(C, H, W) float32``.

    Raises:
        MeanFileError: the bytes are not a BlobProto, or the shape and data sizes disagree.
    """
    blob = _BlobProto()
    try:
        blob.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError and, for some inputs, others
        raise MeanFileError(f"not a Caffe BlobProto: {exc}") from exc
    values = blob.data if len(blob.data) else blob.double_data
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:  # the legacy 4-D fields
        shape = (blob.num, blob.channels, blob.height, blob.width)
    if not values or int(np.prod(shape)) != len(values):
        raise MeanFileError(f"BlobProto shape {shape} does not match its {len(values)} values")
    array = np.asarray(values, dtype=np.float32).reshape(shape)
    while array.ndim > 3 and array.shape[0] == 1:
        array = array[0]
    return array


def load_mean(path: Path) -> Array:
    """Load a mean from ``.binaryproto`` or ``.npy``, as ``(C, H, W)`` or ``(C,)`` float32.

    Values are in the net's channel order and 0-255 pixel scale, as Caffe's tools write them.

    Raises:
        OSError: the file cannot be read.
        MeanFileError: the content is not a mean of shape ``(C, H, W)`` or ``(C,)``.
    """
    if path.suffix == ".npy":
        try:
            array: Array = np.load(path, allow_pickle=False).astype(np.float32)
        except ValueError as exc:
            raise MeanFileError(f"{path}: not a NumPy array file: {exc}") from exc
        while array.ndim > 3 and array.shape[0] == 1:
            array = array[0]
    else:
        array = blob_proto_to_array(path.read_bytes())
    if array.ndim not in (1, 3):
        raise MeanFileError(f"{path}: mean must be (C, H, W) or (C,), found {array.shape}")
    return array
