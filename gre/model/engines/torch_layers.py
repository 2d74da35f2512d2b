"""One builder per Caffe layer type, each with Caffe's TEST-phase semantics in float32 torch.

A builder takes the layer's spec, its bottom blobs' shapes (known at conversion time, from a
batch-1 run of the layers before it) and its learned blobs from the caffemodel, checks the
blobs' shapes against what the prototxt implies, and returns an :class:`Op`: an ``nn.Module``
whose forward maps the bottom tensors to the list of top tensors. Nothing runs in place, so a
blob's value stays readable after later layers run. Each docstring names the Caffe source
(``src/caffe/layers/...``) whose conventions it follows.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gre.model.engines.torch_params import (
    FLT_MAX,
    Array,
    Builder,
    LayerSpec,
    Op,
    Shape,
    axis_of,
    enum,
    expect_blobs,
    flag,
    num,
    nums,
    pair,
)
from gre.model.prototxt import Message


def convolution(spec: LayerSpec, shapes: list[Shape], blobs: list[Array]) -> Op:
    """src/caffe/layers/base_conv_layer.cpp, conv_layer.cpp: weight ``(num_output, C / group,
    kh, kw)``, bias ``(num_output,)`` (``bias_term``); output size ``floor((H + 2 pad -
    (dilation (k - 1) + 1)) / stride) + 1``, which is torch's ``conv2d``."""
    p = spec.param("convolution_param")
    channels = shapes[0][1]
    outputs, group = int(num(p, "num_output", 0)), int(num(p, "group", 1))
    if outputs <= 0 or channels % group or outputs % group:
        raise spec.error(f"num_output {outputs} and {channels} channels must divide by {group}")
    kernel = pair(spec, p, "kernel", 0) if "kernel_h" in p else pair(spec, p, "kernel_size", 0)
    stride, pad = pair(spec, p, "stride", 1), pair(spec, p, "pad", 0)
    dilation = pair(spec, p, "dilation", 1)
    bias = flag(p, "bias_term", True)
    wanted: list[Shape] = [(outputs, channels // group, *kernel)] + ([(outputs,)] if bias else [])
    arrays = dict(zip(("weight", "bias"), expect_blobs(spec, blobs, wanted), strict=False))

    def run(op: Op, x: list[Tensor]) -> list[Tensor]:
        b = op.w("bias") if bias else None
        return [F.conv2d(x[0], op.w("weight"), b, stride, pad, dilation, group)]

    return Op(run, **arrays)


def _pooled(size: int, kernel: int, stride: int, pad: int, like_torch: bool = False) -> int:
    """Caffe's pooled size (pooling_layer.cpp, Reshape): ``ceil((size + 2 pad - kernel) /
    stride) + 1``, minus one when padded and the last window would start in the padding.
    ``like_torch``: torch's ``ceil_mode`` size, which subtracts the one even when unpadded."""
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    if (pad > 0 or like_torch) and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _pool_exact(x: Tensor, ave: bool, k: tuple[int, int], s: tuple[int, int],
                p: tuple[int, int], out: tuple[int, int]) -> Tensor:  # fmt: skip
    """Pooling to Caffe's ``out`` size where torch's own arithmetic disagrees: pad explicitly to
    the extent the windows cover, pool with no padding, and (AVE) divide by Caffe's window
    sizes, the window clipped to ``size + pad``."""
    size = x.shape[2:]
    extra = [(out[i] - 1) * s[i] + k[i] - p[i] - size[i] for i in range(2)]  # < 0: crop
    padded = F.pad(x, (p[1], extra[1], p[0], extra[0]), value=0.0 if ave else -math.inf)
    if not ave:  # a window wholly in the padding is -FLT_MAX in Caffe (fp16: -65504), not -inf
        return F.max_pool2d(padded, k, s).clamp(min=max(-FLT_MAX, torch.finfo(x.dtype).min))
    total = F.avg_pool2d(padded, k, s, divisor_override=1)
    return total / _ave_divisor((size[0], size[1]), k, s, p, out, x.dtype, x.device)


@functools.lru_cache(maxsize=64)
def _ave_divisor(size: tuple[int, int], k: tuple[int, int], s: tuple[int, int],
                 p: tuple[int, int], out: tuple[int, int], dtype: torch.dtype,
                 device: torch.device) -> Tensor:  # fmt: skip
    """Caffe's AVE divisors ``(out_h, out_w)``: each window clipped to ``size + pad``. Cached,
    so that after the first forward no host-to-device copy runs (none may while a CUDA graph
    is being captured)."""
    counts = []
    for i in range(2):
        starts = [o * s[i] - p[i] for o in range(out[i])]
        ends = [min(start + k[i], size[i] + p[i]) for start in starts]
        counts.append(torch.tensor(np.subtract(ends, starts), dtype=dtype, device=device))
    return counts[0][:, None] * counts[1][None, :]


def pooling(spec: LayerSpec, shapes: list[Shape], blobs: list[Array]) -> Op:
    """src/caffe/layers/pooling_layer.cpp: MAX over the window clipped to the input; AVE sums
    the clipped window and divides by the window clipped to ``size + pad`` (padding counts,
    the overhang of the ceil'd last window does not); ``global_pooling``: the whole H x W.
    torch's ``ceil_mode=True, count_include_pad=True`` is the same rule wherever its output
    size equals Caffe's (:func:`_pooled`); elsewhere :func:`_pool_exact` does it by hand."""
    expect_blobs(spec, blobs, [])
    p = spec.param("pooling_param")
    method = enum(p, "pool", ("MAX", "AVE", "STOCHASTIC"), "MAX")
    if method not in ("MAX", "AVE"):
        raise spec.error(f"pool {method} is not supported")
    ave = method == "AVE"
    if flag(p, "global_pooling", False):
        return Op(lambda op, x: [x[0].mean((2, 3), True) if ave else x[0].amax((2, 3), True)])
    k = pair(spec, p, "kernel", 0) if "kernel_h" in p else pair(spec, p, "kernel_size", 0)
    s, pad = pair(spec, p, "stride", 1), pair(spec, p, "pad", 0)
    if min(k) <= 0 or min(s) <= 0 or pad[0] >= k[0] or pad[1] >= k[1]:
        raise spec.error(f"invalid kernel {k}, stride {s}, pad {pad} (Caffe needs pad < kernel)")

    def run(op: Op, x: list[Tensor]) -> list[Tensor]:
        h, w = x[0].shape[2:]
        out = (_pooled(h, k[0], s[0], pad[0]), _pooled(w, k[1], s[1], pad[1]))
        torch_out = tuple(_pooled(n, k[i], s[i], pad[i], True) for i, n in enumerate((h, w)))
        if out != torch_out or 2 * pad[0] > k[0] or 2 * pad[1] > k[1]:
            return [_pool_exact(x[0], ave, k, s, pad, out)]
        if ave:
            return [F.avg_pool2d(x[0], k, s, pad, ceil_mode=True, count_include_pad=True)]
        return [F.max_pool2d(x[0], k, s, pad, ceil_mode=True)]

    return Op(run)


def inner_product(spec: LayerSpec, shapes: list[Shape], blobs: list[Array]) -> Op:
    """src/caffe/layers/inner_product_layer.cpp: flattens from ``axis`` (default 1) in C, H, W
    order; weight ``(num_output, K)``, or ``(K, num_output)`` with ``transpose``; ``bias_term``."""
    p = spec.param("inner_product_param")
    axis = axis_of(spec, int(num(p, "axis", 1)), len(shapes[0]))
    inputs, outputs = math.prod(shapes[0][axis:]), int(num(p, "num_output", 0))
    transpose, bias = flag(p, "transpose", False), flag(p, "bias_term", True)
    wanted: list[Shape] = [(inputs, outputs) if transpose else (outputs, inputs)]
    arrays = expect_blobs(spec, blobs, wanted + ([(outputs,)] if bias else []))
    weight = np.ascontiguousarray(arrays[0].T if transpose else arrays[0])
    extra = {"bias": arrays[1]} if bias else {}

    def run(op: Op, x: list[Tensor]) -> list[Tensor]:
        b = op.w("bias") if bias else None
        return [F.linear(x[0].flatten(axis), op.w("weight"), b)]

    return Op(run, weight=weight, **extra)


def lrn(spec: LayerSpec, shapes: list[Shape], blobs: list[Array]) -> Op:
    """src/caffe/layers/lrn_layer.cpp. ACROSS_CHANNELS: ``x / (k + alpha / n * sum x^2)^beta``
    over ``n = local_size`` channels centred on each (torch's ``local_response_norm``).
    WITHIN_CHANNEL: ``x * (1 + alpha * avg x^2)^-beta`` over an n x n window (Caffe builds it
    from AVE pooling with pad (n - 1) / 2 and a Power layer with shift 1: ``k`` is unused)."""
    expect_blobs(spec, blobs, [])
    p = spec.param("lrn_param")
    size = int(num(p, "local_size", 5))
    alpha, beta, k = num(p, "alpha", 1.0), num(p, "beta", 0.75), num(p, "k", 1.0)
    if size % 2 != 1:
        raise spec.error(f"local_size {size} must be odd (as Caffe requires)")
    # float32 in fp16/bf16 nets: x^2 overflows fp16 above 256, and the sum and pow want it.
    if enum(p, "norm_region", ("ACROSS_CHANNELS", "WITHIN_CHANNEL"), "ACROSS_CHANNELS") == (
        "ACROSS_CHANNELS"
    ):
        return Op(lambda op, x: [F.local_response_norm(x[0], size, alpha, beta, k)], "float32")
    pad = (size - 1) // 2

    def within(op: Op, x: list[Tensor]) -> list[Tensor]:
        mean = F.avg_pool2d(x[0] * x[0], size, 1, pad, count_include_pad=True)
        return [x[0] * (1.0 + alpha * mean).pow(-beta)]

    return Op(within, "float32")


def batch_norm(spec: LayerSpec, shapes: list[Shape], blobs: list[Array]) -> Op:
    """src/caffe/layers/batch_norm_layer.cpp: ``(x - mean) / sqrt(var + eps)`` per channel
    (axis 1). With ``use_global_stats`` (the default at TEST) mean and var are the stored blobs
    divided by the third blob, the moving-average factor (0 -> factor 0); otherwise the batch's
    own statistics over N, H, W (biased variance). Computed in float32 as Caffe does, also in
    fp16/bf16 nets (as cuDNN's batch norm: the statistics, their division by the factor and
    ``sqrt(var + eps)`` stay float32; eps = 1e-5 is below fp16's precision at 1)."""
    p = spec.param("batch_norm_param")
    channels = shapes[0][1]
    eps = np.float32(num(p, "eps", 1e-5))
    mean, var, factor = expect_blobs(spec, blobs, [(channels,), (channels,), (1,)])
    scale = np.float32(0.0) if factor[0] == 0 else np.float32(1.0) / factor[0]
    std = np.sqrt(var * scale + eps)
    view = (1, channels) + (1,) * (len(shapes[0]) - 2)

    def global_stats(op: Op, x: list[Tensor]) -> list[Tensor]:
        return [(x[0] - op.w("mean").view(view)) / op.w("std").view(view)]

    def batch_stats(op: Op, x: list[Tensor]) -> list[Tensor]:
        dims = [d for d in range(x[0].ndim) if d != 1]
        centred = x[0] - x[0].mean(dims, keepdim=True)
        return [centred / ((centred * centred).mean(dims, keepdim=True) + float(eps)).sqrt()]

    if not flag(p, "use_global_stats", True):
        return Op(batch_stats, "float32")
    return Op(global_stats, "float32", mean=mean * scale, std=std)


def scale(spec: LayerSpec, shapes: list[Shape], blobs: list[Array]) -> Op:
    """src/caffe/layers/scale_layer.cpp (and bias_layer.cpp): ``x * scale (+ bias)``, the scale
    spanning ``num_axes`` (default 1; -1: all) axes from ``axis`` (default 1), broadcast over
    the rest; the scale is the second bottom when there are two."""
    p = spec.param("scale_param")
    shape = shapes[0]
    axis = axis_of(spec, int(num(p, "axis", 1)), len(shape))
    if len(shapes) > 1:
        scale_shape = shapes[1]
    else:
        count = int(num(p, "num_axes", 1))
        scale_shape = shape[axis:] if count == -1 else shape[axis : axis + count]
    if shape[axis : axis + len(scale_shape)] != scale_shape:
        raise spec.error(f"scale shape {scale_shape} does not fit {shape} at axis {axis}")
    bias = flag(p, "bias_term", False)
    wanted = ([] if len(shapes) > 1 else [scale_shape]) + ([scale_shape] if bias else [])
    arrays = expect_blobs(spec, blobs, wanted)
    names = ("bias",) if len(shapes) > 1 else ("scale", "bias")
    tail = len(shape) - axis - len(scale_shape)
    view = (1,) * axis + scale_shape + (1,) * tail

    def run(op: Op, x: list[Tensor]) -> list[Tensor]:
        factor = x[1] if len(x) > 1 else op.w("scale")
        out = x[0] * factor.reshape(view)
        return [out + op.w("bias").view(view) if bias else out]

    return Op(run, **dict(zip(names, arrays, strict=False)))


def prelu(spec: LayerSpec, shapes: list[Shape], blobs: list[Array]) -> Op:
    """src/caffe/layers/prelu_layer.cpp: ``max(x, 0) + slope_c * min(x, 0)``, one slope per
    channel (axis 1), or one for all with ``channel_shared``."""
    p = spec.param("prelu_param")
    channels = 1 if flag(p, "channel_shared", False) or len(shapes[0]) < 2 else shapes[0][1]
    (slope,) = expect_blobs(spec, blobs, [(channels,)])
    view = (1, channels) + (1,) * max(len(shapes[0]) - 2, 0)

    def run(op: Op, x: list[Tensor]) -> list[Tensor]:
        return [x[0].clamp(min=0) + op.w("slope").view(view) * x[0].clamp(max=0)]

    return Op(run, slope=slope)


def relu(spec: LayerSpec, shapes: list[Shape], blobs: list[Array]) -> Op:
    """src/caffe/layers/relu_layer.cpp: ``max(x, 0) + negative_slope * min(x, 0)``."""
    expect_blobs(spec, blobs, [])
    slope = num(spec.param("relu_param"), "negative_slope", 0.0)
    if slope == 0.0:
        return Op(lambda op, x: [F.relu(x[0])])
    return Op(lambda op, x: [F.leaky_relu(x[0], slope)])


def dropout(spec: LayerSpec, shapes: list[Shape], blobs: list[Array]) -> Op:
    """src/caffe/layers/dropout_layer.cpp at TEST: the identity, or ``x * (1 - ratio)`` when
    ``scale_train`` is false (training then did not rescale)."""
    p = spec.param("dropout_param")
    if flag(p, "scale_train", True):
        return Op(lambda op, x: [x[0]])
    keep = 1.0 - num(p, "dropout_ratio", 0.5)
    return Op(lambda op, x: [x[0] * keep])


def softmax(spec: LayerSpec, shapes: list[Shape], blobs: list[Array]) -> Op:
    """src/caffe/layers/softmax_layer.cpp: over ``axis`` (default 1). In float32 in every net,
    its top left in float32 (the probabilities; fp16 would round them to 2^-11 near 1)."""
    axis = axis_of(spec, int(num(spec.param("softmax_param"), "axis", 1)), len(shapes[0]))
    return Op(lambda op, x: [torch.softmax(x[0], axis)], "float32_out")


def concat(spec: LayerSpec, shapes: list[Shape], blobs: list[Array]) -> Op:
    """src/caffe/layers/concat_layer.cpp: along ``axis`` (default 1; legacy ``concat_dim``)."""
    p = spec.param("concat_param")
    axis = axis_of(spec, int(num(p, "axis", num(p, "concat_dim", 1))), len(shapes[0]))
    return Op(lambda op, x: [torch.cat(x, axis)])


def eltwise(spec: LayerSpec, shapes: list[Shape], blobs: list[Array]) -> Op:
    """src/caffe/layers/eltwise_layer.cpp: PROD, SUM (default; ``coeff`` per bottom, each
    bottom scaled and accumulated in order) or MAX of same-shaped bottoms.

    In fp16/bf16 nets it computes in float32 (one rounding at the end, coeffs not rounded)
    when it would otherwise round more than once: more than two bottoms, or a SUM coeff other
    than 1. Two bottoms with unit coeffs (ResNet's shortcut) run in the net's dtype: PyTorch
    computes ``a + b`` and ``a * b`` in float32 per element and rounds once, the same result."""
    p = spec.param("eltwise_param")
    operation = enum(p, "operation", ("PROD", "SUM", "MAX"), "SUM")
    coeff = nums(p, "coeff") or [1.0] * len(shapes)
    if len(coeff) != len(shapes) or len(set(shapes)) != 1:
        raise spec.error(f"needs same-shaped bottoms and one coeff each: {shapes}, {coeff}")

    def run(op: Op, x: list[Tensor]) -> list[Tensor]:
        if operation == "PROD":
            out = x[0]
            for t in x[1:]:
                out = out * t
        elif operation == "MAX":
            out = x[0]
            for t in x[1:]:
                out = torch.maximum(out, t)
        else:
            out = x[0] if coeff[0] == 1.0 else x[0] * coeff[0]
            for c, t in zip(coeff[1:], x[1:], strict=True):
                out = out + t if c == 1.0 else out + t * c
        return [out]

    if operation not in ("PROD", "SUM", "MAX"):
        raise spec.error(f"unknown operation {operation}")
    rounds_once = operation == "MAX" or (
        len(shapes) <= 2 and (operation == "PROD" or all(c == 1.0 for c in coeff))
    )
    return Op(run, "as_is" if rounds_once else "float32")


def flatten(spec: LayerSpec, shapes: list[Shape], blobs: list[Array]) -> Op:
    """src/caffe/layers/flatten_layer.cpp: axes ``axis`` (1) to ``end_axis`` (-1) into one."""
    p = spec.param("flatten_param")
    start = axis_of(spec, int(num(p, "axis", 1)), len(shapes[0]))
    end = axis_of(spec, int(num(p, "end_axis", -1)), len(shapes[0]))
    return Op(lambda op, x: [x[0].flatten(start, end)])


def reshape(spec: LayerSpec, shapes: list[Shape], blobs: list[Array]) -> Op:
    """src/caffe/layers/reshape_layer.cpp: axes ``axis`` .. ``axis + num_axes`` (default all)
    become ``shape``'s dims, where 0 copies the bottom's dim there and -1 is inferred."""
    p = spec.param("reshape_param")
    dims = [int(d) for d in nums(_shape_message(p), "dim")]
    axis, count = int(num(p, "axis", 0)), int(num(p, "num_axes", -1))
    if dims.count(-1) > 1:
        raise spec.error("at most one -1 in reshape_param.shape")

    def run(op: Op, x: list[Tensor]) -> list[Tensor]:
        shape = list(x[0].shape)
        start = axis if axis >= 0 else len(shape) + axis + 1
        end = len(shape) if count == -1 else start + count
        middle = [shape[start + i] if d == 0 else d for i, d in enumerate(dims)]
        return [x[0].reshape([*shape[:start], *middle, *shape[end:]])]

    return Op(run)


def _shape_message(p: Message) -> Message:
    shapes = [v for v in p.get("shape", []) if isinstance(v, dict)]
    return shapes[0] if shapes else {}


def split(spec: LayerSpec, shapes: list[Shape], blobs: list[Array]) -> Op:
    """src/caffe/layers/split_layer.cpp: the bottom shared by every top."""
    return Op(lambda op, x: [x[0]] * len(spec.tops))


def _unary(fn: Callable[[Tensor], Tensor], source: str) -> Builder:
    def build(spec: LayerSpec, shapes: list[Shape], blobs: list[Array]) -> Op:
        expect_blobs(spec, blobs, [])
        return Op(lambda op, x: [fn(x[0])])

    build.__doc__ = f"{source}: elementwise."
    return build


BUILDERS: dict[str, Builder] = {
    "Convolution": convolution,
    "Pooling": pooling,
    "InnerProduct": inner_product,
    "LRN": lrn,
    "BatchNorm": batch_norm,
    "Scale": scale,
    "ReLU": relu,
    "PReLU": prelu,
    "Sigmoid": _unary(torch.sigmoid, "src/caffe/layers/sigmoid_layer.cpp"),
    "TanH": _unary(torch.tanh, "src/caffe/layers/tanh_layer.cpp"),
    "Dropout": dropout,
    "Softmax": softmax,
    "Concat": concat,
    "Eltwise": eltwise,
    "Flatten": flatten,
    "Reshape": reshape,
    "Split": split,
}
