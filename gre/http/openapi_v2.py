"""The Open Inference Protocol's part of gre's OpenAPI document (KServe v2;
``gre.http.inference_protocol``): its schemas and its ``/v2`` paths."""

from __future__ import annotations

from gre.http.openapi_parts import (
    NON_NEGATIVE,
    REQUEST_ID,
    REQUEST_ID_HEADER,
    RETRY_AFTER,
    Schema,
    closed_object,
    get_operation,
    image_errors,
    json_response,
    ref,
    timeout_header,
)

_STRING = {"type": "string"}
_SHAPE = {"type": "array", "items": {"type": "integer", "minimum": -1}}

V2_SCHEMAS: dict[str, Schema] = {
    "V2Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "minLength": 1},
            "message": {"type": "string", "minLength": 1},
        },
        "description": "The protocol's error object. Refusals that gre's catalogue names "
        "start `<code>: ` (README's errors table), and `image <i> of <n>: ` when one image "
        "caused it. Unknown paths and errors of the connection itself (408, 431, some 400 "
        "and 503) come in gre's Error shape, which also has `error`.",
    },
    "V2ServerMetadata": closed_object(
        {
            "name": {"const": "gre"},
            "version": _STRING,
            "extensions": {"type": "array", "items": _STRING},
        }
    ),
    "V2TensorMetadata": closed_object(
        {"name": _STRING, "datatype": {"enum": ["BYTES", "FP32"]}, "shape": _SHAPE}
    ),
    "V2ModelMetadata": closed_object(
        {
            "name": _STRING,
            "versions": {"type": "array", "items": _STRING, "minItems": 1},
            "platform": {"const": "caffe"},
            "inputs": {"type": "array", "items": ref("V2TensorMetadata")},
            "outputs": {"type": "array", "items": ref("V2TensorMetadata")},
        }
    ),
    "V2ModelConfig": {
        "type": "object",
        "description": "Triton's ModelConfig (model_config.proto) as JSON.",
        "required": [
            "name",
            "platform",
            "backend",
            "max_batch_size",
            "input",
            "output",
            "dynamic_batching",
            "instance_group",
        ],
        "properties": {
            "name": _STRING,
            "platform": {"const": "caffe"},
            "backend": {"type": "string", "description": "The engine."},
            "max_batch_size": {"type": "integer", "minimum": 1},
            "input": {"type": "array", "items": {"type": "object"}},
            "output": {"type": "array", "items": {"type": "object"}},
            "dynamic_batching": {"type": "object"},
            "instance_group": {"type": "array", "items": {"type": "object"}},
        },
    },
    "V2InferRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": _STRING,
            "parameters": {
                "type": "object",
                "properties": {
                    "binary_data_output": {"type": "boolean"},
                    "timeout": {
                        "type": "integer",
                        "minimum": 0,
                        "description": "µs; lowers the deadline (0: none).",
                    },
                },
            },
            "inputs": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1,
                "items": {
                    "type": "object",
                    "required": ["name", "datatype", "shape"],
                    "properties": {
                        "name": {"const": "image"},
                        "datatype": {"const": "BYTES"},
                        "shape": {
                            "type": "array",
                            "items": {"type": "integer", "minimum": 1},
                            "minItems": 1,
                            "maxItems": 2,
                            "description": "[N, 1] or [N]: N images, 1..max_batch_size.",
                        },
                        "parameters": {
                            "type": "object",
                            "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
                        },
                        "data": {
                            "type": "array",
                            "description": "Each image base64-encoded, flat or one per row.",
                            "items": {"anyOf": [_STRING, {"type": "array", "items": _STRING}]},
                        },
                    },
                },
            },
            "outputs": {
                "type": "array",
                "maxItems": 1,
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"const": "probabilities"},
                        "parameters": {
                            "type": "object",
                            "properties": {
                                "binary_data": {"type": "boolean"},
                                "classification": {"type": "integer", "minimum": 0},
                            },
                        },
                    },
                },
            },
        },
    },
    "V2InferResponse": {
        "type": "object",
        "required": ["model_name", "outputs"],
        "properties": {
            "model_name": _STRING,
            "id": _STRING,
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "datatype", "shape"],
                    "properties": {
                        "name": {"const": "probabilities"},
                        "datatype": {"enum": ["FP32", "BYTES"]},
                        "shape": _SHAPE,
                        "data": {"type": "array", "items": {"type": ["number", "string"]}},
                        "parameters": closed_object({"binary_data_size": NON_NEGATIVE}),
                    },
                },
            },
        },
    },
}


def _v2_json(name: str, description: str) -> Schema:
    return json_response(ref(name), description)


def _v2_error(description: str, headers: Schema | None = None) -> Schema:
    return json_response(ref("V2Error"), description, headers)


_UNKNOWN_MODEL = _v2_error("Not the model serving (nor its version).")


def _v2_ready(ready: bool, schema: Schema) -> Schema:
    return json_response(schema, "Ready (as /readyz)." if ready else "Not ready (as /readyz: 503).")


def _v2_readiness(model: bool) -> Schema:
    fields: Schema = {"ready": {"type": "boolean"}}
    if model:
        fields = {"name": _STRING, **fields}
    responses = {
        "200": _v2_ready(True, closed_object(fields)),
        "503": _v2_ready(False, closed_object(fields)),
    }
    if model:
        responses["404"] = _UNKNOWN_MODEL
    return responses


def _infer_errors() -> dict[int, str]:
    """``POST .../infer``'s errors: status -> when; classify's, less ``bad_top_k``, and the
    protocol's own."""
    errors = {s: when for s, (when, _) in image_errors("bad_top_k", "bad_blob").items()}
    errors[400] = (
        "A body that is not the protocol's inference request (JSON, or a JSON header and "
        "binary tensor data), another input or output than `image` and `probabilities`, more "
        "images than `max_batch_size`, an element that is not base64 (JSON); or " + errors[400]
    )
    errors[404] = "Not the model serving (nor its version); no X-Request-Id when no route matched."
    errors[503] += " Also: no replica has loaded the model yet."
    return dict(sorted(errors.items()))


def _infer(operation_id: str) -> Schema:
    request_id = {"X-Request-Id": REQUEST_ID}
    responses: Schema = {
        "200": {
            "description": "The outputs: JSON, or (when an output asked for binary data) a "
            "JSON header of Inference-Header-Content-Length bytes, then the binary outputs.",
            "headers": {
                **request_id,
                "Inference-Header-Content-Length": {
                    "description": "With binary outputs: the JSON header's length, bytes.",
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                },
            },
            "content": {
                "application/json": {"schema": ref("V2InferResponse")},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }
    for status, description in _infer_errors().items():
        headers: Schema = {} if status == 404 else dict(request_id)
        if status == 503:
            headers["Retry-After"] = RETRY_AFTER
        responses[str(status)] = _v2_error(description, headers or None)
    return {
        "operationId": operation_id,
        "summary": "Classify N images (Open Inference Protocol)",
        "parameters": [
            {
                "name": "Inference-Header-Content-Length",
                "in": "header",
                "description": "Binary tensor data extension: the JSON header's length, bytes; "
                "the inputs' binary data follows it.",
                "schema": {"type": "string", "pattern": "^[0-9]{1,10}$"},
            },
            timeout_header("As for /api/classify: only lowers the deadline."),
            REQUEST_ID_HEADER,
        ],
        "requestBody": {
            "required": True,
            "description": "The inference request: JSON, or with Inference-Header-Content-Length "
            "a JSON header followed by the input's binary tensor data (each image as a 4-byte "
            "little-endian length, then its bytes).",
            "content": {
                "application/json": {"schema": ref("V2InferRequest")},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        "responses": responses,
    }


_NAME = {"name": "name", "in": "path", "required": True, "schema": _STRING}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": _STRING}


def _v2_model_paths(prefix: str, parameters: list[Schema], suffix: str) -> dict[str, Schema]:
    """The per-model operations under ``prefix`` (``/v2/models/{name}``, or with
    ``/versions/{version}``); ``suffix`` tells their operation ids apart."""

    def get(operation_id: str, summary: str, responses: Schema) -> Schema:
        item = get_operation(operation_id + suffix, summary, responses)
        item["get"]["parameters"] = parameters
        return item

    metadata = _v2_json("V2ModelMetadata", "The model's input and output.")
    config = _v2_json("V2ModelConfig", "The model as Triton's ModelConfig.")
    infer = _infer("v2_infer" + suffix)
    infer["parameters"] = parameters + infer["parameters"]
    return {
        prefix: get("v2_model", "Model metadata", {"200": metadata, "404": _UNKNOWN_MODEL}),
        f"{prefix}/ready": get("v2_model_ready", "Model readiness", _v2_readiness(True)),
        f"{prefix}/config": get(
            "v2_model_config", "Model config", {"200": config, "404": _UNKNOWN_MODEL}
        ),
        f"{prefix}/infer": {"post": infer},
    }


def v2_paths() -> dict[str, Schema]:
    """The ``/v2`` paths."""
    server = _v2_json("V2ServerMetadata", "gre's name, version and protocol extensions.")
    return {
        "/v2": get_operation("v2_server", "Server metadata", {"200": server}),
        "/v2/health/live": get_operation(
            "v2_live",
            "Liveness",
            {"200": json_response(closed_object({"live": {"const": True}}), "Alive.")},
        ),
        "/v2/health/ready": get_operation("v2_ready", "Readiness", _v2_readiness(False)),
        **_v2_model_paths("/v2/models/{name}", [_NAME], ""),
        **_v2_model_paths("/v2/models/{name}/versions/{version}", [_NAME, _VERSION], "_version"),
    }
