"""The binary tensor data codec (gre/http/binary_tensor.py) against Triton's client's own
serializers, and its refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from gre.http.binary_tensor import (
    TensorDataError,
    decode_bytes_elements,
    encode_bytes_elements,
    encode_fp32,
    join_body,
    split_body,
)

ELEMENTS = [b"\xff\xd8\xff\xe0 a jpeg", b"", b"\x00" * 300, "ünïcode".encode()]


def test_bytes_elements_are_tritons_serialization() -> None:
    tritons = serialize_byte_tensor(np.array(ELEMENTS, np.object_)).item()
    assert encode_bytes_elements(ELEMENTS) == tritons
    assert decode_bytes_elements(tritons, len(ELEMENTS)) == ELEMENTS
    assert list(deserialize_bytes_tensor(encode_bytes_elements(ELEMENTS))) == ELEMENTS


def test_no_elements() -> None:
    assert encode_bytes_elements([]) == b""
    assert decode_bytes_elements(b"", 0) == []


@pytest.mark.parametrize(
    ("data", "count", "message"),
    [
        (b"\x03\x00\x00\x00ab", 1, "BYTES element 0 declares 3 bytes; 2 remain"),
        (
            b"\x01\x00\x00\x00a\x01\x00",
            2,
            "BYTES element 1: its 4-byte length is cut off at byte 5",
        ),
        (b"\x00\x00\x00\x00" * 3, 2, "holds more than the 2 elements its shape gives"),
        (b"", 1, "holds 0 elements; its shape gives 1"),
    ],
)
def test_malformed_bytes_tensors_are_refused(data: bytes, count: int, message: str) -> None:
    with pytest.raises(TensorDataError, match=message):
        decode_bytes_elements(data, count)


def test_fp32_is_little_endian_row_major() -> None:
    tensor = np.arange(6, dtype=np.float32).reshape(2, 3)
    raw = encode_fp32(tensor.astype(">f4"))  # whatever the byte order it arrives in
    assert raw == tensor.astype("<f4").tobytes()
    assert np.frombuffer(raw, "<f4").reshape(2, 3).tolist() == tensor.tolist()
    assert encode_fp32(tensor.T) == np.ascontiguousarray(tensor.T).astype("<f4").tobytes()


def test_join_then_split_round_trips() -> None:
    header = {"outputs": [{"name": "probabilities", "parameters": {"binary_data_size": 3}}]}
    body, length = join_body(header, [b"abc", b"de"])
    assert json.loads(body[:length]) == header
    assert split_body(body, str(length)) == (body[:length], b"abcde")
    assert split_body(b'{"a": 1}', None) == (b'{"a": 1}', b"")


@pytest.mark.parametrize(
    ("length", "message"),
    [
        ("0", "raw binary request"),
        ("5", "is 5 but the body has only 4 bytes"),
        ("-1", "must be a decimal byte count"),
        ("1e3", "must be a decimal byte count"),
        ("٣", "must be a decimal byte count"),  # a non-ASCII digit
        ("9" * 40, "must be a decimal byte count"),
    ],
)
def test_bad_header_lengths_are_refused(length: str, message: str) -> None:
    with pytest.raises(TensorDataError, match=message):
        split_body(b"{}ab", length)
