"""gre's HTTP API as an OpenAPI 3.1 document, served at ``GET /openapi.json``.

Written by hand rather than generated from the handlers: the handlers take raw bytes and read
their own parameters, so nothing in them could be introspected. ``tests/http/test_openapi.py``
keeps the two in step: every route is described and every description has a route, and a
schemathesis run against a real server checks that each status, content type, body and
header gre answers is the one described here.
"""

from __future__ import annotations

import functools
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

import gre
from gre.http.errors import ErrorCode

#: A JSON Schema or OpenAPI object.
Schema = dict[str, Any]

#: Media types a client may name for the image; gre ignores Content-Type and reads the format
#: from the bytes, so any of them (or none, or curl's form type) is the same request.
IMAGE_MEDIA_TYPES = (
    "application/octet-stream",
    "image/jpeg",
    "image/png",
    "image/bmp",
    "image/webp",
)

#: Codes of errors any path may answer (unknown path, wrong method).
ROUTING_ERRORS = (ErrorCode.NOT_FOUND.value, ErrorCode.METHOD_NOT_ALLOWED.value)
#: Codes only ``/admin/*`` answers (off by default, so not in this document).
ADMIN_ERRORS = (
    ErrorCode.FORBIDDEN.value,
    ErrorCode.RELOAD_IN_PROGRESS.value,
    ErrorCode.RELOAD_FAILED.value,
)


def _classify_errors() -> dict[int, tuple[str, tuple[str, ...]]]:
    """``POST /api/classify``'s errors from the catalogue: status -> (when, error codes)."""
    by_status: dict[int, list[ErrorCode]] = {}
    for code in ErrorCode:
        if code.value not in ROUTING_ERRORS + ADMIN_ERRORS:
            by_status.setdefault(code.status, []).append(code)
    errors = {}
    for status, codes in sorted(by_status.items()):
        when = "; ".join(f"`{c.value}`: {c.facts.description}" for c in codes)
        if any(c.facts.retry_after for c in codes):
            when += ". Retry after `Retry-After` seconds."
        errors[status] = (when, tuple(c.value for c in codes))
    return errors


#: ``POST /api/classify``'s errors: status -> (when, error codes), from the catalogue.
CLASSIFY_ERRORS = _classify_errors()


def _object(properties: Schema, description: str | None = None) -> Schema:
    """A closed JSON object: every property required, no others allowed."""
    schema: Schema = {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
    if description:
        schema["description"] = description
    return schema


def _json(schema: Schema, description: str, headers: Schema | None = None) -> Schema:
    """A response with a JSON body."""
    response: Schema = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        response["headers"] = headers
    return response


def _error(codes: tuple[str, ...], description: str, headers: Schema | None = None) -> Schema:
    """An error response: ``{"error": one of codes, "message": ...}``."""
    schema = {
        "allOf": [{"$ref": "#/components/schemas/Error"}],
        "properties": {"error": {"enum": list(codes)}},
    }
    return _json(schema, description, headers)


_NON_NEGATIVE = {"type": "integer", "minimum": 0}

_REQUEST_ID = {
    "description": "The client's X-Request-Id, or a new one when it sent none.",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
}
#: The request header every classifying operation takes: the client's id for the request.
_REQUEST_ID_HEADER: Schema = {
    "name": "X-Request-Id",
    "in": "header",
    "description": "Echoed in the response and logged; a new one when absent.",
    "schema": {"type": "string"},
}


def _timeout_header(description: str) -> Schema:
    """The ``X-Request-Timeout-Ms`` request header (``gre.http.request_parts.parse_timeout``)."""
    return {
        "name": "X-Request-Timeout-Ms",
        "in": "header",
        "description": description,
        "schema": {"type": "string", "pattern": r"^[0-9]{1,9}(\.[0-9]{1,6})?$"},
    }


_RETRY_AFTER = {
    "description": "Seconds to wait before retrying.",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}
_SERVER_TIMING = {
    "description": "Milliseconds spent queued, decoding and preprocessing, and in the forward.",
    "required": True,
    "schema": {
        "type": "string",
        "pattern": r"^queue;dur=[0-9]+\.[0-9]{3}, preprocess;dur=[0-9]+\.[0-9]{3}, "
        r"inference;dur=[0-9]+\.[0-9]{3}$",
    },
}

SCHEMAS: dict[str, Schema] = {
    "Error": _object(
        {
            "error": {
                "type": "string",
                "enum": sorted(
                    {c for _, codes in CLASSIFY_ERRORS.values() for c in codes}
                    | set(ROUTING_ERRORS)
                ),
                "description": "Machine-readable code (README's errors table).",
            },
            "message": {"type": "string", "minLength": 1, "description": "What was wrong."},
        },
        "Every error answer.",
    ),
    "Classification": {
        "type": "array",
        "minItems": 1,
        "description": "The top-k classes, most probable first.",
        "items": _object(
            {
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                "label": {
                    "type": "string",
                    "description": "The class's synset words line (or label, or its index).",
                },
            }
        ),
    },
    "Model": _object(
        {
            "name": {"type": "string"},
            "engine": {"type": "string", "enum": ["caffe", "opencv", "torch", "null"]},
            "deploy": {"type": "string", "description": "Path of the deploy prototxt."},
            "weights": {"type": "string", "description": "Path of the caffemodel."},
            "version": _object(
                {
                    "digest": {
                        "type": "string",
                        "pattern": "^[0-9a-f]{12}$",
                        "description": "SHA-256 of the deploy prototxt and caffemodel, "
                        "first 12 hex digits.",
                    },
                    "loaded_at": {"type": "string", "description": "UTC, ISO 8601."},
                    "generation": {
                        "type": "integer",
                        "minimum": 1,
                        "description": "1 at start-up, +1 per reload.",
                    },
                }
            ),
            "reload": _object(
                {
                    "in_progress": {"type": "boolean"},
                    "last_error": {
                        "type": ["string", "null"],
                        "description": "Why the last reload failed; null after one that did not.",
                    },
                }
            ),
            "input_shape": {
                "type": "array",
                "items": {"type": "integer", "minimum": 1},
                "minItems": 3,
                "maxItems": 3,
                "description": "The net input's (C, H, W).",
            },
            "classes": {
                "type": ["integer", "null"],
                "minimum": 1,
                "description": "Null until a replica reports it when no labels are configured.",
            },
            "devices": {
                "type": "array",
                "items": {"type": "string", "pattern": "^(cpu|gpu:[0-9]+)$"},
                "uniqueItems": True,
            },
            "replicas": {
                "type": "array",
                "items": _object(
                    {
                        "name": {"type": "string"},
                        "state": {
                            "type": "string",
                            "enum": ["starting", "ready", "dead", "stopped"],
                        },
                        "pid": {"type": ["integer", "null"], "description": "While ready."},
                        "device": {"type": "string", "pattern": "^(cpu|gpu:[0-9]+)$"},
                        "restarts": _NON_NEGATIVE,
                    }
                ),
            },
            "batching": _object(
                {
                    "max_batch_size": {"type": "integer", "minimum": 1},
                    "max_queue_delay_ms": {"type": "number", "minimum": 0},
                    "max_queue_size": {"type": "integer", "minimum": 1},
                    "timeout_ms": {"type": "number", "exclusiveMinimum": 0},
                }
            ),
            "queue": _object({"waiting": _NON_NEGATIVE, "in_flight": _NON_NEGATIVE}),
            "batches_by_size": {
                "type": "object",
                "propertyNames": {"pattern": "^[1-9][0-9]*$"},
                "additionalProperties": {"type": "integer", "minimum": 1},
                "description": "Batches run so far, by their size.",
            },
        }
    ),
    "Readiness": _object(
        {
            "ready": {"type": "boolean"},
            "draining": {"type": "boolean"},
            "replicas": _object(
                {"ready": _NON_NEGATIVE, "total": {"type": "integer", "minimum": 1}}
            ),
        }
    ),
}


def _classify(classes: int | None) -> Schema:
    top_k: Schema = {"type": "integer", "minimum": 1}
    if classes:
        top_k["maximum"] = classes
    request_id = {"X-Request-Id": _REQUEST_ID}
    responses: Schema = {
        "200": _json(
            {"$ref": "#/components/schemas/Classification"},
            "The image's top-k classes.",
            {**request_id, "Server-Timing": _SERVER_TIMING},
        )
    }
    for status, (description, codes) in CLASSIFY_ERRORS.items():
        headers = {**request_id, "Retry-After": _RETRY_AFTER} if status == 503 else request_id
        responses[str(status)] = _error(codes, description, headers)
    return {
        "operationId": "classify",
        "summary": "Classify one image",
        "parameters": [
            {
                "name": "top_k",
                "in": "query",
                "description": "How many classes to answer, 1..classes (`classes` of GET "
                "/api/model); default `server.default_top_k`, at most the class count.",
                "schema": top_k,
            },
            _timeout_header(
                "A deadline in ms (a positive decimal number, e.g. `250` or `12.5`); only "
                "lowers the configured `timeout_ms`."
            ),
            _REQUEST_ID_HEADER,
        ],
        "requestBody": {
            "required": True,
            "description": "The raw image bytes: JPEG, PNG, BMP or WebP. The format is read "
            "from the bytes; Content-Type is ignored.",
            "content": {
                media_type: {"schema": {"type": "string", "format": "binary"}}
                for media_type in IMAGE_MEDIA_TYPES
            },
        },
        "responses": responses,
    }


def _get(operation_id: str, summary: str, responses: Schema) -> Schema:
    return {"get": {"operationId": operation_id, "summary": summary, "responses": responses}}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _readiness(ready: bool, description: str) -> Schema:
    schema = {"allOf": [_ref("Readiness")], "properties": {"ready": {"const": ready}}}
    return _json(schema, f"{description} `replicas` counts those ready and all.")


def _page() -> Schema:
    """``GET /``: the try-it page (``gre.http.ui``), or 404 with ``server.ui = false``."""
    return _get(
        "ui",
        "The try-it page",
        {
            "200": {
                "description": "The page: choose an image, see its top-k classes.",
                "content": {"text/html": {"schema": {"type": "string"}}},
            },
            "404": _error(("not_found",), "`server.ui` is false."),
        },
    )


# The Open Inference Protocol (KServe v2; gre.http.inference_protocol)

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
    "V2ServerMetadata": _object(
        {
            "name": {"const": "gre"},
            "version": _STRING,
            "extensions": {"type": "array", "items": _STRING},
        }
    ),
    "V2TensorMetadata": _object(
        {"name": _STRING, "datatype": {"enum": ["BYTES", "FP32"]}, "shape": _SHAPE}
    ),
    "V2ModelMetadata": _object(
        {
            "name": _STRING,
            "versions": {"type": "array", "items": _STRING, "minItems": 1},
            "platform": {"const": "caffe"},
            "inputs": {"type": "array", "items": _ref("V2TensorMetadata")},
            "outputs": {"type": "array", "items": _ref("V2TensorMetadata")},
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
                        "parameters": _object({"binary_data_size": _NON_NEGATIVE}),
                    },
                },
            },
        },
    },
}


def _v2_json(name: str, description: str) -> Schema:
    return _json(_ref(name), description)


def _v2_error(description: str, headers: Schema | None = None) -> Schema:
    return _json(_ref("V2Error"), description, headers)


_UNKNOWN_MODEL = _v2_error("Not the model serving (nor its version).")


def _v2_ready(ready: bool, schema: Schema) -> Schema:
    return _json(schema, "Ready (as /readyz)." if ready else "Not ready (as /readyz: 503).")


def _v2_readiness(model: bool) -> Schema:
    fields: Schema = {"ready": {"type": "boolean"}}
    if model:
        fields = {"name": _STRING, **fields}
    responses = {"200": _v2_ready(True, _object(fields)), "503": _v2_ready(False, _object(fields))}
    if model:
        responses["404"] = _UNKNOWN_MODEL
    return responses


def _infer_errors() -> dict[int, str]:
    """``POST .../infer``'s errors: status -> when; classify's, less ``bad_top_k``, and the
    protocol's own."""
    errors = {s: when for s, (when, codes) in CLASSIFY_ERRORS.items() if codes != ("bad_top_k",)}
    errors[400] = (
        "A body that is not the protocol's inference request (JSON, or a JSON header and "
        "binary tensor data), another input or output than `image` and `probabilities`, more "
        "images than `max_batch_size`, an element that is not base64 (JSON); or " + errors[400]
    )
    errors[404] = "Not the model serving (nor its version); no X-Request-Id when no route matched."
    errors[503] += " Also: no replica has loaded the model yet."
    return dict(sorted(errors.items()))


def _infer(operation_id: str) -> Schema:
    request_id = {"X-Request-Id": _REQUEST_ID}
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
                "application/json": {"schema": _ref("V2InferResponse")},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }
    for status, description in _infer_errors().items():
        headers: Schema = {} if status == 404 else dict(request_id)
        if status == 503:
            headers["Retry-After"] = _RETRY_AFTER
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
            _timeout_header("As for /api/classify: only lowers the deadline."),
            _REQUEST_ID_HEADER,
        ],
        "requestBody": {
            "required": True,
            "description": "The inference request: JSON, or with Inference-Header-Content-Length "
            "a JSON header followed by the input's binary tensor data (each image as a 4-byte "
            "little-endian length, then its bytes).",
            "content": {
                "application/json": {"schema": _ref("V2InferRequest")},
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
        item = _get(operation_id + suffix, summary, responses)
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


def _v2_paths() -> dict[str, Schema]:
    """The ``/v2`` paths."""
    server = _v2_json("V2ServerMetadata", "gre's name, version and protocol extensions.")
    return {
        "/v2": _get("v2_server", "Server metadata", {"200": server}),
        "/v2/health/live": _get(
            "v2_live", "Liveness", {"200": _json(_object({"live": {"const": True}}), "Alive.")}
        ),
        "/v2/health/ready": _get("v2_ready", "Readiness", _v2_readiness(False)),
        **_v2_model_paths("/v2/models/{name}", [_NAME], ""),
        **_v2_model_paths("/v2/models/{name}/versions/{version}", [_NAME, _VERSION], "_version"),
    }


@functools.cache
def openapi_document(classes: int | None) -> Schema:
    """The OpenAPI 3.1 document (a JSON-ready dict), built once per ``classes``: the model's
    class count, the most ``top_k`` may ask for (``None`` while unknown: a net without
    configured labels reports it once a replica has loaded)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gre",
            "version": gre.__version__,
            "description": "Image classification with Caffe models and dynamic batching. "
            "Any path answers 404 `not_found` when unknown and 405 `method_not_allowed` "
            "(with `Allow`) for a method it does not take, with the Error body.",
        },
        "paths": {
            "/": _page(),
            "/api/classify": {"post": _classify(classes)},
            "/api/model": _get(
                "model",
                "The model, engine, replicas, batching settings and batches so far",
                {"200": _json(_ref("Model"), "What is served, and how.")},
            ),
            "/healthz": _get(
                "healthz",
                "Liveness",
                {"200": _json(_object({"status": {"const": "ok"}}), "The process answers.")},
            ),
            "/readyz": _get(
                "readyz",
                "Readiness",
                {
                    "200": _readiness(
                        True, "Every replica has loaded and warmed up, and one is up now."
                    ),
                    "503": _readiness(False, "Starting, no replica up, or draining."),
                },
            ),
            "/metrics": _get(
                "metrics",
                "Prometheus metrics",
                {
                    "200": {
                        "description": f"Text exposition format ({CONTENT_TYPE_LATEST}).",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            ),
            "/openapi.json": _get(
                "openapi",
                "This document",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["openapi", "info", "paths"],
                            "properties": {"openapi": {"type": "string", "pattern": r"^3\.1\."}},
                        },
                        "The OpenAPI 3.1 description of gre's API.",
                    )
                },
            ),
            **_v2_paths(),
        },
        "components": {
            "schemas": {**SCHEMAS, **V2_SCHEMAS},
            "responses": {
                "NotFound": _error(("not_found",), "No endpoint at this path."),
                "MethodNotAllowed": _error(
                    ("method_not_allowed",),
                    "The path does not take this method.",
                    {"Allow": {"required": True, "schema": {"type": "string"}}},
                ),
            },
        },
    }
