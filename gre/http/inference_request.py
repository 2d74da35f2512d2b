"""The Open Inference Protocol's (KServe v2) inference request as gre takes it: the body of
``POST /v2/models/{name}[/versions/{version}]/infer``, parsed and checked
(:func:`parse_infer_request`); the model's input and output names; and the protocol's error
answer (:class:`ProtocolError`), which the rest of ``gre.http.inference_protocol`` raises too.

Sources: the protocol (kserve/open-inference-protocol, specification/protocol/
inference_rest.md: the inference request, and the error object ``{"error": "..."}``);
Triton's extensions (triton-inference-server/server, docs/protocol/):
``binary_tensor_data`` (extension_binary_data.md, framed by :mod:`gre.http.binary_tensor`)
and ``classification`` (extension_classification.md: an output's ``classification``
parameter).

The model's one input, ``image``, is BYTES with shape ``[N, 1]`` (or ``[N]``): ``N`` encoded
images, at most ``max_batch_size`` (Triton's rule for a model's ``max_batch_size``). In binary
tensor data each element is an image's raw bytes; in JSON each element is a string, the image
base64-encoded (RFC 4648, standard alphabet), since JSON strings cannot carry arbitrary bytes
(tritonclient sends a BYTES element as a JSON string only when it is valid UTF-8). Its one
output, ``probabilities``, is asked for as JSON or binary tensor data, and with the
classification extension's count; the request's ``timeout`` parameter (µs) may lower the
deadline.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse, Response

from gre.http.binary_tensor import TensorDataError, decode_bytes_elements, split_body
from gre.http.errors import RETRY_AFTER_S, ApiError, ErrorCode

#: The model's one input: encoded images, BYTES [N, 1].
INPUT = "image"
#: The model's one output: FP32 [N, classes], or BYTES [N, k] with ``classification``.
OUTPUT = "probabilities"

#: A JSON object as parsed.
Json = dict[str, Any]


class ProtocolError(Exception):
    """An answer in the protocol's error shape, ``{"error": message}``, with HTTP ``status``.

    ``code``: the catalogue code it stands for (``gre.http.errors``), whose headers
    (``Retry-After``) and ``gre_rejected_total`` reason it carries; ``None`` for a request
    the protocol's own rules refuse (400), an unknown model (404), or a 503 that only asks
    to come back (``retry_after``).
    """

    def __init__(
        self, status: int, message: str, code: ErrorCode | None = None, retry_after: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.retry_after = retry_after

    @classmethod
    def of(cls, error: ApiError, image: int | None = None, count: int = 0) -> ProtocolError:
        """``error`` in this shape: ``"<code>: [image i of n: ]<message>"``."""
        where = "" if image is None else f"image {image} of {count}: "
        return cls(error.code.status, f"{error.code.value}: {where}{error.message}", error.code)

    def response(self) -> Response:
        """The answer: ``{"error": message}``, with the code's headers."""
        headers = self.code.headers if self.code is not None else {}
        if self.retry_after:
            headers["Retry-After"] = str(RETRY_AFTER_S)
        return JSONResponse({"error": self.message}, self.status, headers=headers)


def bad_request(message: str) -> ProtocolError:
    """400: a request the protocol (or gre's one input and output) does not take."""
    return ProtocolError(400, message)


def shown(value: Any) -> str:
    """``repr(value)``, cut to 60 characters: a client's value quoted in a message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# The inference request


@dataclass(frozen=True)
class RequestedOutput:
    """One output asked for: as binary tensor data (else JSON), and the classification
    extension's count (0: the FP32 probabilities themselves)."""

    binary: bool
    classification: int


@dataclass(frozen=True)
class InferRequest:
    """An inference request as parsed: its ``id``, the encoded images (row order), the
    outputs asked for, and its ``timeout`` parameter in ms (``None``: not given)."""

    id: str | None
    images: list[bytes]
    outputs: list[RequestedOutput]
    timeout_ms: float | None


def parse_infer_request(body: bytes, header_length: str | None, max_images: int) -> InferRequest:
    """Parse ``POST .../infer``'s body: JSON, or a JSON header of ``header_length`` bytes and
    binary tensor data.

    Raises:
        ProtocolError: 400, naming what is wrong.
    """
    try:
        header, binary = split_body(body, header_length)
        document = json.loads(header)
    except TensorDataError as exc:
        raise bad_request(str(exc)) from None
    except (ValueError, RecursionError):
        raise bad_request("the inference request is not JSON (nor a JSON header)") from None
    if not isinstance(document, dict):
        raise bad_request("the inference request must be a JSON object")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise bad_request("'id' must be a string")
    parameters = _parameters(document, "the request")
    binary_output = _flag(parameters, "binary_data_output", "the request")
    return InferRequest(
        request_id,
        _images(document.get("inputs"), binary, max_images),
        _outputs(document.get("outputs"), binary_output),
        _timeout_ms(parameters),
    )


def _parameters(holder: Json, what: str) -> Json:
    parameters = holder.get("parameters", {})
    if not isinstance(parameters, dict):
        raise bad_request(f"the parameters of {what} must be an object")
    return parameters


def _flag(parameters: Json, key: str, what: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise bad_request(f"'{key}' of {what} must be true or false, got {shown(value)}")
    return value


def _count(parameters: Json, key: str, what: str) -> int | None:
    """A non-negative integer parameter, ``None`` when absent."""
    value = parameters.get(key)
    if value is not None and (type(value) is not int or value < 0):
        raise bad_request(f"'{key}' of {what} must be a non-negative integer, got {shown(value)}")
    return value


def _timeout_ms(parameters: Json) -> float | None:
    """Triton's ``timeout`` request parameter (µs; 0: none), in ms."""
    timeout_us = _count(parameters, "timeout", "the request")
    return timeout_us / 1000 if timeout_us else None


def _images(inputs: Any, binary: bytes, max_images: int) -> list[bytes]:
    """The encoded images of the one input, ``image``: from its JSON ``data`` (base64
    strings) or from the binary data after the header."""
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise bad_request(f"'inputs' must hold one input, '{INPUT}' (BYTES, shape [N, 1])")
    tensor: Json = inputs[0]
    if tensor.get("name") != INPUT:
        raise bad_request(
            f"unexpected input {shown(tensor.get('name'))}: the model's input is '{INPUT}'"
        )
    if tensor.get("datatype") != "BYTES":
        raise bad_request(f"input '{INPUT}' is BYTES, got datatype {shown(tensor.get('datatype'))}")
    count = _batch_size(tensor.get("shape"), max_images)
    size = _count(_parameters(tensor, f"input '{INPUT}'"), "binary_data_size", f"input '{INPUT}'")
    if (size is None) == ("data" not in tensor):
        raise bad_request(
            f"input '{INPUT}' must have exactly one of 'data' and parameters.binary_data_size"
        )
    if size is None:
        if binary:
            raise bad_request(f"{len(binary)} bytes follow the header but no input is binary")
        return _base64_images(tensor["data"], count)
    if size != len(binary):
        raise bad_request(
            f"input '{INPUT}' declares binary_data_size {size}; {len(binary)} bytes follow "
            "the header"
        )
    try:
        return decode_bytes_elements(binary, count)
    except TensorDataError as exc:
        raise bad_request(f"input '{INPUT}': {exc}") from None


def _batch_size(shape: Any, max_images: int) -> int:
    """N of a shape ``[N]`` or ``[N, 1]``, 1..``max_images``."""
    valid = (
        isinstance(shape, list)
        and len(shape) in (1, 2)
        and all(type(d) is int for d in shape)
        and shape[1:] in ([], [1])
    )
    if not valid:
        raise bad_request(f"input '{INPUT}' has shape [N, 1] or [N], got {shown(shape)}")
    count: int = shape[0]
    if not 1 <= count <= max_images:
        raise bad_request(
            f"a request holds 1..{max_images} images (max_batch_size), got shape {shape}"
        )
    return count


def _base64_images(data: Any, count: int) -> list[bytes]:
    """The images of JSON ``data``: ``count`` base64 strings, flat or one per row."""
    strings = data if isinstance(data, list) else None
    if strings is not None and all(isinstance(row, list) for row in strings):
        strings = [element for row in strings for element in row]
    if strings is None or not all(isinstance(element, str) for element in strings):
        raise bad_request(f"input '{INPUT}': 'data' must be a list of base64 strings")
    if len(strings) != count:
        raise bad_request(f"input '{INPUT}' holds {len(strings)} elements; its shape gives {count}")
    images = []
    for index, element in enumerate(strings):
        try:
            images.append(base64.b64decode(element, validate=True))
        except (binascii.Error, ValueError):
            raise bad_request(
                f"image {index} of {count}: not base64 (in JSON, each element of '{INPUT}' "
                "is an encoded image in base64; or send binary tensor data)"
            ) from None
    return images


def _outputs(outputs: Any, binary_default: bool) -> list[RequestedOutput]:
    """The outputs asked for; none listed: ``probabilities``, binary if
    ``binary_data_output``."""
    if outputs is None or outputs == []:
        return [RequestedOutput(binary_default, 0)]
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise bad_request("'outputs' must be a list of objects")
    if [o.get("name") for o in outputs] != [OUTPUT]:
        names = [o.get("name") for o in outputs]
        raise bad_request(
            f"unexpected outputs {shown(names)}: the model's one output is '{OUTPUT}'"
        )
    what = f"output '{OUTPUT}'"
    parameters = _parameters(outputs[0], what)
    if "shared_memory_region" in parameters:
        raise bad_request("the shared-memory extension is not supported")
    binary = _flag(parameters, "binary_data", what) if "binary_data" in parameters else None
    classification = _count(parameters, "classification", what) or 0
    return [RequestedOutput(binary_default if binary is None else binary, classification)]
