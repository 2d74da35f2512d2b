"""The blobs of a deploy prototxt: which layers Caffe keeps at TEST, and who writes each blob.

``caffe.Net`` exposes every blob by name (``net.blobs``); a blob written in place (a ReLU
whose top is its bottom) holds its *last* writer's value once the forward is done. That is
what ``POST /api/features?blob=`` returns, so the engines that name outputs by layer (OpenCV)
need the last writer of each blob. No torch, no pycaffe: the front end reads this too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # gre.model.prototxt imports this module
    from gre.model.prototxt import Message, Value


def _messages(values: list[Value]) -> list[Message]:
    return [v for v in values if isinstance(v, dict)]


def _number(value: Value) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def _rule_matches(rule: Message) -> bool:
    """A NetStateRule against Caffe's TEST state (level 0, no stages): src/caffe/net.cpp,
    ``Net::StateMeetsRule``."""
    phase = rule.get("phase", ["TEST"])[-1]
    if phase not in ("TEST", 1):
        return False
    min_level = [_number(v) for v in rule.get("min_level", [])]
    max_level = [_number(v) for v in rule.get("max_level", [])]
    if (min_level and min_level[-1] > 0) or (max_level and max_level[-1] < 0):
        return False
    return not rule.get("stage")  # any required stage is absent; not_stage always holds


def in_test_phase(layer: Message) -> bool:
    """Whether Caffe keeps ``layer`` in a TEST net (``Net::FilterNet``): with ``include`` rules,
    when one matches; otherwise unless an ``exclude`` rule matches."""
    include = _messages(layer.get("include", []))
    if include:
        return any(_rule_matches(rule) for rule in include)
    return not any(_rule_matches(rule) for rule in _messages(layer.get("exclude", [])))


def kept_layers(net: Message) -> list[Message]:
    """The layers of a parsed prototxt that a TEST net keeps, in order (``layer`` or the
    legacy ``layers``)."""
    layers = _messages(net.get("layer", [])) or _messages(net.get("layers", []))
    return [layer for layer in layers if in_test_phase(layer)]


def blob_writers(net: Message) -> dict[str, str]:
    """Every blob of the TEST net -> the name of the last layer that writes it, in the order
    the blobs first appear (``caffe.Net.blobs``' order). A net input (``input``, or an Input
    layer's top) maps to ``""``: its value is the input batch itself."""
    writers: dict[str, str] = {str(name): "" for name in net.get("input", [])}
    for index, layer in enumerate(kept_layers(net)):
        is_input = layer.get("type", [""])[-1] == "Input"
        name = "" if is_input else str(layer.get("name", [f"layer{index}"])[-1])
        for top in layer.get("top", []):
            writers[str(top)] = name
    return writers
