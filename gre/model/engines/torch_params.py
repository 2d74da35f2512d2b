"""What every torch layer builder shares: a layer's spec, the :class:`Op` a builder returns,
and readers of a layer's parameters and learned blobs (with Caffe's defaults)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

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

#: How an op runs once the net is in fp16 or bf16 (:meth:`Op.set_dtype`); in fp32 every op
#: runs as written. ``"net"``: in the net's dtype, bottoms cast to it (layers with learned
#: weights, which are stored in it: Convolution, InnerProduct, Scale, PReLU). ``"as_is"``: in
#: whatever dtype its bottoms have (elementwise, pooling, reshaping; PyTorch accumulates
#: reductions such as average pooling in float32 for half types). ``"float32"``: bottoms and
#: weights in float32, tops cast back to the net's dtype (a few elementwise passes where one
#: rounding per layer matters: LRN, BatchNorm, Eltwise with coeffs). ``"float32_out"``: the
#: same, tops left in float32 (Softmax: probabilities would round to 2^-11 in fp16, 2^-8 in
#: bf16). These follow torch.autocast's op lists (conv/linear in half, softmax/pow/sum in
#: float32) and cuDNN's batch norm (half in and out, float32 statistics and arithmetic).
Compute = Literal["net", "as_is", "float32", "float32_out"]


class Op(nn.Module):
    """A layer: ``fn(op, bottoms) -> tops``, with its learned tensors as named buffers (so
    ``.to(device)`` moves them). ``compute`` (default: ``"net"`` with weights, ``"as_is"``
    without) says how it runs in fp16/bf16 (:data:`Compute`)."""

    def __init__(self, fn: OpFn, compute: Compute | None = None, /, **weights: Array) -> None:
        super().__init__()
        self.fn = fn
        self.compute: Compute = compute or ("net" if weights else "as_is")
        #: The net's dtype; float32 until :meth:`set_dtype`.
        self.dtype = torch.float32
        for name, array in weights.items():
            self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(array)))

    def set_dtype(self, dtype: torch.dtype, channels_last: bool) -> None:
        """Run in ``dtype`` from now on: the buffers of a ``"net"`` op are converted to it (a
        float32 op keeps float32 ones); ``channels_last``: 4-D ones (convolution weights) in
        NHWC memory order."""
        self.dtype = dtype
        for name, buffer in list(self.named_buffers(recurse=False)):
            if self.compute == "net":
                buffer = buffer.to(dtype)
            if channels_last and buffer.ndim == 4:
                buffer = buffer.contiguous(memory_format=torch.channels_last)
            self.register_buffer(name, buffer)

    def w(self, name: str) -> Tensor:
        """The buffer ``name``."""
        return self.get_buffer(name)

    def forward(self, *bottoms: Tensor) -> list[Tensor]:
        if self.dtype == torch.float32 or self.compute == "as_is":
            return self.fn(self, list(bottoms))
        if self.compute == "net":
            return self.fn(self, [b.to(self.dtype) for b in bottoms])
        tops = self.fn(self, [b.float() for b in bottoms])
        return tops if self.compute == "float32_out" else [t.to(self.dtype) for t in tops]


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
