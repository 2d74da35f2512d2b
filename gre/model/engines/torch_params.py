"""What every torch layer builder shares: a layer's spec, the :class:`Op` a builder returns,
and readers of a layer's parameters and learned blobs (with Caffe's defaults)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from gre.model.engines import EngineError
from gre.model.prototxt import Message, Value

Array = npt.NDArray[np.float32]
Shape = tuple[int, ...]
FLT_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class LayerSpec:
    """One prototxt layer: ``name``, ``type`` (today's spelling), blob names, whole message."""

    name: str
    type: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    message: Message

    def param(self, field: str) -> Message:
        """The layer's ``field`` sub-message (e.g. ``"convolution_param"``); ``{}`` if absent."""
        for value in self.message.get(field, []):
            if isinstance(value, dict):
                return value
        return {}

    def error(self, problem: str) -> EngineError:
        """An EngineError naming this layer and its type."""
        return EngineError(f"layer {self.name!r} ({self.type}): {problem}")


OpFn = Callable[["Op", list[Tensor]], list[Tensor]]
Builder = Callable[[LayerSpec, list[Shape], list[Array]], "Op"]


class Op(nn.Module):
    """A layer: ``fn(op, bottoms) -> tops``, with its learned tensors as named buffers (so
    ``.to(device)`` moves them)."""

    def __init__(self, fn: OpFn, **weights: Array) -> None:
        super().__init__()
        self.fn = fn
        for name, array in weights.items():
            self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(array)))

    def w(self, name: str) -> Tensor:
        """The buffer ``name``."""
        return self.get_buffer(name)

    def forward(self, *bottoms: Tensor) -> list[Tensor]:
        return self.fn(self, list(bottoms))


# ---- reading parameters ---------------------------------------------------------------------


def _num(value: Value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EngineError(f"expected a number, found {value!r}")
    return float(value)


def nums(message: Message, field: str) -> list[float]:
    """Every value of a repeated numeric field."""
    return [_num(v) for v in message.get(field, [])]


def num(message: Message, field: str, default: float) -> float:
    """The (last) value of a numeric field, or ``default``."""
    values = nums(message, field)
    return values[-1] if values else default


def flag(message: Message, field: str, default: bool) -> bool:
    """A bool field, or ``default``."""
    values = message.get(field, [])
    return bool(values[-1]) if values else default


def enum(message: Message, field: str, names: tuple[str, ...], default: str) -> str:
    """An enum field by name; a numeric value indexes ``names`` (caffe.proto's order)."""
    values = message.get(field, [])
    if not values:
        return default
    value = values[-1]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return names[value]
    return str(value)


def axis_of(spec: LayerSpec, axis: int, ndim: int) -> int:
    """Caffe's ``Blob::CanonicalAxisIndex``: a negative axis counts from the end."""
    if not -ndim <= axis < ndim:
        raise spec.error(f"axis {axis} out of range for a {ndim}-D blob")
    return axis % ndim


def expect_blobs(spec: LayerSpec, blobs: list[Array], shapes: list[Shape]) -> list[Array]:
    """``blobs`` if their shapes are ``shapes``. As Caffe's ``Blob::ShapeEquals``, a legacy
    4-D blob matches a shape of up to 4 axes padded with leading 1s (it is reshaped).

    Raises:
        EngineError: naming the layer, the expected and the actual shapes.
    """
    if len(blobs) != len(shapes):
        raise spec.error(
            f"the caffemodel has {len(blobs)} blobs for it, expected {len(shapes)} "
            f"of shapes {shapes}"
        )
    out = []
    for index, (blob, shape) in enumerate(zip(blobs, shapes, strict=True)):
        legacy = (1,) * (4 - len(shape)) + shape
        if blob.shape != shape and not (blob.ndim == 4 and blob.shape == legacy):
            raise spec.error(f"blob {index} has shape {blob.shape}, expected {shape}")
        out.append(blob.reshape(shape))
    return out


def pair(spec: LayerSpec, p: Message, field: str, default: int) -> tuple[int, int]:
    """``field_h``/``field_w`` if set, else the repeated ``field`` (one value or h, w)."""
    if f"{field}_h" in p or f"{field}_w" in p:
        return int(num(p, f"{field}_h", default)), int(num(p, f"{field}_w", default))
    values = [int(v) for v in nums(p, field)] or [default]
    if len(values) > 2:
        raise spec.error(f"{field} has {len(values)} values; only 2-D layers are supported")
    return values[0], values[-1]


# ---- builders -------------------------------------------------------------------------------
