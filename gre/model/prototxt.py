"""Read a Caffe deploy prototxt (protobuf text format) without pycaffe.

gre needs only a few facts from the deploy prototxt -- the input blob's name and shape, the layer
types -- so it parses the text format generically into nested dictionaries instead of carrying
caffe.proto. Every field maps to a list of values because protobuf text format allows repeated
fields anywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from gre.model.blobs import blob_writers

Value = Union[str, int, float, bool, "Message"]
Message = dict[str, list[Value]]

_TOKEN = re.compile(
    r"""
    \s+|\#[^\n]*                          # whitespace and comments: skipped
    |(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    |(?P<punct>[{}:<>;,\[\]])
    |(?P<word>[-+.\w]+)
    """,
    re.VERBOSE,
)


class PrototxtError(ValueError):
    """The text is not valid protobuf text format, or lacks what a deploy prototxt needs."""


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            line = text.count("\n", 0, pos) + 1
            raise PrototxtError(f"line {line}: unexpected character {text[pos]!r}")
        pos = match.end()
        if match.lastgroup is not None:
            tokens.append((match.lastgroup, match.group(match.lastgroup)))
    return tokens


def _scalar(kind: str, raw: str) -> Value:
    if kind == "string":
        return raw[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape")
    if raw in ("true", "True"):
        return True
    if raw in ("false", "False"):
        return False
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        return float(raw)
    except ValueError:
        return raw  # an enum name such as TEST or MAX


def parse(text: str) -> Message:
    """Parse protobuf text format into ``{field: [values]}``; nested messages are dicts.

    Raises:
        PrototxtError: on a syntax error (with the line number where possible).
    """
    tokens = _tokens(text)
    pos = 0

    def message(closing: str | None) -> Message:
        nonlocal pos
        fields: Message = {}
        while pos < len(tokens):
            kind, raw = tokens[pos]
            if kind == "punct" and raw in ";,":
                pos += 1
                continue
            if kind == "punct" and raw == closing:
                pos += 1
                return fields
            if kind != "word":
                raise PrototxtError(f"expected a field name, found {raw!r}")
            name = raw
            pos += 1
            if pos < len(tokens) and tokens[pos] == ("punct", ":"):
                pos += 1
            if pos >= len(tokens):
                raise PrototxtError(f"field {name!r} has no value")
            kind, raw = tokens[pos]
            values: list[Value]
            if kind == "punct" and raw in "{<":
                pos += 1
                values = [message("}" if raw == "{" else ">")]
            elif kind == "punct" and raw == "[":
                pos += 1
                values = []
                while pos < len(tokens) and tokens[pos] != ("punct", "]"):
                    if tokens[pos] != ("punct", ","):
                        values.append(_scalar(*tokens[pos]))
                    pos += 1
                pos += 1
            elif kind in ("word", "string"):
                pos += 1
                values = [_scalar(kind, raw)]
                # Adjacent string literals concatenate, as in C.
                while pos < len(tokens) and kind == "string" and tokens[pos][0] == "string":
                    values[0] = str(values[0]) + str(_scalar(*tokens[pos]))
                    pos += 1
            else:
                raise PrototxtError(f"field {name!r}: unexpected {raw!r}")
            fields.setdefault(name, []).extend(values)
        if closing is not None:
            raise PrototxtError(f"missing {closing!r} at end of text")
        return fields

    return message(None)


@dataclass(frozen=True)
class NetSpec:
    """What gre needs from a deploy prototxt.

    Attributes:
        name: the net's ``name`` field ("" when absent).
        input_name: the input blob's name, e.g. ``"data"``.
        input_shape: the input blob's ``(C, H, W)``; the batch dimension is dropped because gre
            reshapes the net to each batch.
        layer_types: every layer's ``type`` in order, e.g. ``["Convolution", "ReLU", ...]``.
        output_name: the top of the last layer, which is the net's output by Caffe's convention
            unless it is consumed by a later layer.
        blob_names: every blob of the TEST net, input first, in ``caffe.Net.blobs``' order
            (what ``/api/features?blob=`` may name).
    """

    name: str
    input_name: str
    input_shape: tuple[int, int, int]
    layer_types: tuple[str, ...]
    output_name: str
    blob_names: tuple[str, ...] = ()


def _messages(values: list[Value]) -> list[Message]:
    return [v for v in values if isinstance(v, dict)]


def _ints(values: list[Value]) -> list[int]:
    return [int(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]


def net_spec(text: str) -> NetSpec:
    """Read the input geometry from a deploy prototxt's text.

    The input is declared in one of Caffe's three ways: ``input`` + four ``input_dim``,
    ``input`` + ``input_shape { dim ... }``, or a layer of type ``Input`` with
    ``input_param { shape { dim ... } }``.

    Raises:
        PrototxtError: on a syntax error, or when no 4-D input is declared.
    """
    net = parse(text)
    layers = _messages(net.get("layer", [])) or _messages(net.get("layers", []))
    layer_types = tuple(str(layer.get("type", ["?"])[0]) for layer in layers)
    input_name: str | None = None
    dims: list[int] = []
    if net.get("input"):
        input_name = str(net["input"][0])
        if net.get("input_dim"):
            dims = _ints(net["input_dim"])[:4]
        else:
            for shape in _messages(net.get("input_shape", []))[:1]:
                dims = _ints(shape.get("dim", []))
    else:
        for layer in layers:
            if layer.get("type", [None])[0] == "Input":
                input_name = str(layer.get("top", layer.get("name", ["data"]))[0])
                for param in _messages(layer.get("input_param", []))[:1]:
                    for shape in _messages(param.get("shape", []))[:1]:
                        dims = _ints(shape.get("dim", []))
                break
    if input_name is None:
        raise PrototxtError("no input declared (input/input_dim, input_shape or an Input layer)")
    if len(dims) != 4 or min(dims[1:]) <= 0:
        raise PrototxtError(f"input {input_name!r} must be 4-D (N, C, H, W), found {dims}")
    tops = [str(layer["top"][-1]) for layer in layers if layer.get("top")]
    return NetSpec(
        name=str(net.get("name", [""])[0]),
        input_name=input_name,
        input_shape=(dims[1], dims[2], dims[3]),
        layer_types=layer_types,
        output_name=tops[-1] if tops else input_name,
        blob_names=tuple(dict.fromkeys([input_name, *blob_writers(net)])),
    )


def read_net_spec(path: Path) -> NetSpec:
    """:func:`net_spec` of a file; raises ``OSError`` or :class:`PrototxtError`."""
    return net_spec(path.read_text(encoding="utf-8"))
