"""The binary tensor data extension of the Open Inference Protocol: the body framing and the
element codecs.

Triton's "binary_tensor_data" extension (triton-inference-server/server,
docs/protocol/extension_binary_data.md; KServe documents the same as its "Binary Tensor Data
Extension"): a body is a JSON header of ``Inference-Header-Content-Length`` bytes, followed
by the raw data of each tensor whose parameters give its ``binary_data_size``, in the order
the header lists them. Raw data is little-endian, row-major, without stride or padding; a
BYTES element is a 4-byte little-endian unsigned length followed by that many bytes.

Pure functions over bytes: no HTTP, no JSON schema (``gre.http.inference_protocol`` reads
the header).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

#: The header giving the JSON header's length in bytes when binary tensor data follows it.
HEADER_LENGTH = "Inference-Header-Content-Length"

_LENGTH = struct.Struct("<I")


class TensorDataError(ValueError):
    """A body or binary tensor that does not parse; the message says what and where."""


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary data after it.

    Args:
        body: the whole request body.
        header_length: ``Inference-Header-Content-Length`` as sent (decimal bytes), or
            ``None``: the whole body is the JSON header.

    Raises:
        TensorDataError: the length is not a decimal number, is 0 (Triton's "raw binary
            request", which gre does not take), or exceeds the body.
    """
    if header_length is None:
        return body, b""
    if not header_length.isascii() or not header_length.isdigit() or len(header_length) > 19:
        raise TensorDataError(
            f"{HEADER_LENGTH} must be a decimal byte count, got {header_length!r}"
        )
    length = int(header_length)
    if length == 0:
        raise TensorDataError(
            f"{HEADER_LENGTH}: 0 (a raw binary request, without a JSON header) is not "
            "supported: send the JSON header first, or POST one image to /api/classify"
        )
    if length > len(body):
        raise TensorDataError(
            f"{HEADER_LENGTH} is {length} but the body has only {len(body)} bytes"
        )
    return body[:length], body[length:]


def decode_bytes_elements(data: bytes, count: int) -> list[bytes]:
    """The ``count`` BYTES elements of one tensor's binary data (each a 4-byte little-endian
    length, then that many bytes), in row-major order.

    Raises:
        TensorDataError: a length runs past the data, or the data holds more or fewer than
            ``count`` elements (reading stops at the first extra one).
    """
    elements: list[bytes] = []
    offset = 0
    while offset < len(data):
        if len(elements) == count:
            raise TensorDataError(
                f"the BYTES tensor holds more than the {count} elements its shape gives"
            )
        if offset + _LENGTH.size > len(data):
            raise TensorDataError(
                f"BYTES element {len(elements)}: its 4-byte length is cut off at byte {offset}"
            )
        (size,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        if offset + size > len(data):
            raise TensorDataError(
                f"BYTES element {len(elements)} declares {size} bytes; "
                f"{len(data) - offset} remain in the tensor's data"
            )
        elements.append(data[offset : offset + size])
        offset += size
    if len(elements) != count:
        raise TensorDataError(
            f"the BYTES tensor holds {len(elements)} elements; its shape gives {count}"
        )
    return elements


def encode_bytes_elements(elements: Iterable[bytes]) -> bytes:
    """BYTES elements as binary tensor data: each one's 4-byte little-endian length, then
    its bytes."""
    return b"".join(_LENGTH.pack(len(element)) + element for element in elements)


def encode_fp32(tensor: npt.NDArray[np.float32]) -> bytes:
    """An FP32 tensor of any shape as binary tensor data: little-endian float32, row-major."""
    return np.ascontiguousarray(tensor, dtype="<f4").tobytes()


def join_body(header: Mapping[str, Any], tensors: Sequence[bytes]) -> tuple[bytes, int]:
    """A binary-extension body: ``header`` as compact UTF-8 JSON, then ``tensors`` in order.
    Returns the body and the header's length in bytes (``Inference-Header-Content-Length``).
    """
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([encoded, *tensors]), len(encoded)
