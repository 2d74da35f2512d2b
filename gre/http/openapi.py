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
            {
                "name": "X-Request-Timeout-Ms",
                "in": "header",
                "description": "A deadline in ms (a positive decimal number, e.g. `250` or "
                "`12.5`); only lowers the configured `timeout_ms`.",
                "schema": {"type": "string", "pattern": r"^[0-9]{1,9}(\.[0-9]{1,6})?$"},
            },
            {
                "name": "X-Request-Id",
                "in": "header",
                "description": "Echoed in the response and logged; a new one when absent.",
                "schema": {"type": "string"},
            },
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
        },
        "components": {
            "schemas": SCHEMAS,
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
