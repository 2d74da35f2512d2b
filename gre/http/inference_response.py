"""The Open Inference Protocol's (KServe v2) inference response as gre builds it: the model's
one output, ``probabilities``, from the images' predictions (:func:`infer_response`).

Sources: the protocol (kserve/open-inference-protocol, specification/protocol/
inference_rest.md: the inference response); Triton's extensions
(triton-inference-server/server, docs/protocol/): ``binary_tensor_data``
(extension_binary_data.md, framed by :mod:`gre.http.binary_tensor`) and ``classification``
(extension_classification.md; strings formatted as Triton's src/classification.cc does).

``probabilities`` is FP32 ``[N, classes]``: each image's full probability vector by class
index; with the classification extension it is instead BYTES ``[N, k]``, Triton's
``"<probability>:<index>:<label>"`` strings, most probable first. Each output is JSON
``data``, or (``binary_data``, ``binary_data_output``) binary tensor data after a JSON header.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from starlette.responses import JSONResponse, Response

from gre.http.binary_tensor import HEADER_LENGTH, encode_bytes_elements, encode_fp32, join_body
from gre.http.inference_request import OUTPUT, InferRequest, Json, ProtocolError, RequestedOutput
from gre.messages import Prediction


def probabilities(predictions: Sequence[Prediction]) -> npt.NDArray[np.float32]:
    """``(N, classes)`` float32: each image's probabilities by class index, from its
    prediction of every class.

    Raises:
        ProtocolError: 503, the images' class counts differ (a reload swapped models
            between their batches).
    """
    classes = len(predictions[0].indices)
    if any(len(p.indices) != classes for p in predictions):
        raise ProtocolError(
            503, "the model was reloaded while the request's images ran; retry", retry_after=True
        )
    matrix = np.zeros((len(predictions), classes), np.float32)
    for row, prediction in enumerate(predictions):
        matrix[row, list(prediction.indices)] = prediction.confidences
    return matrix


def classifications(
    predictions: Sequence[Prediction], labels: Sequence[Sequence[str]], count: int
) -> list[list[str]]:
    """Per image its top ``count`` classes (at most its classes: Triton's rule) as Triton's
    ``"<probability>:<index>:<label>"``, the probability as C's ``%f`` (six decimals)."""
    return [
        [
            f"{confidence:f}:{index}:{label}"
            for index, confidence, label in zip(
                p.indices[:count], p.confidences[:count], names, strict=False
            )
        ]
        for p, names in zip(predictions, labels, strict=True)
    ]


def output_tensor(
    output: RequestedOutput, predictions: Sequence[Prediction], labels: Sequence[Sequence[str]]
) -> tuple[Json, bytes | None]:
    """One response output: its JSON object (with ``data``, or ``binary_data_size``) and,
    when binary, its binary tensor data."""
    tensor: Json = {"name": OUTPUT}
    data: list[Any]
    if output.classification:
        rows = classifications(predictions, labels, output.classification)
        tensor.update(datatype="BYTES", shape=[len(rows), len(rows[0])])
        data = [element for row in rows for element in row]
        raw = encode_bytes_elements(element.encode() for element in data)
    else:
        matrix = probabilities(predictions)
        tensor.update(datatype="FP32", shape=list(matrix.shape))
        data, raw = matrix.ravel().tolist(), encode_fp32(matrix)
    if not output.binary:
        tensor["data"] = data
        return tensor, None
    tensor["parameters"] = {"binary_data_size": len(raw)}
    return tensor, raw


def infer_response(
    model: str,
    request: InferRequest,
    predictions: Sequence[Prediction],
    labels: Sequence[Sequence[str]],
) -> Response:
    """The inference response: JSON, or (when an output is binary) a JSON header of
    ``Inference-Header-Content-Length`` bytes followed by the binary outputs."""
    header: Json = {"model_name": model}
    if request.id is not None:
        header["id"] = request.id
    tensors = [output_tensor(output, predictions, labels) for output in request.outputs]
    header["outputs"] = [tensor for tensor, _ in tensors]
    raws = [raw for _, raw in tensors if raw is not None]
    if not raws:
        return JSONResponse(header)
    body, length = join_body(header, raws)
    return Response(
        body, headers={HEADER_LENGTH: str(length)}, media_type="application/octet-stream"
    )
