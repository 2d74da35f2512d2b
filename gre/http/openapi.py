"""gre's HTTP API as an OpenAPI 3.1 document, served at ``GET /openapi.json``.

Written by hand rather than generated from the handlers: the handlers take raw bytes and read
their own parameters, so nothing in them could be introspected. ``tests/http/test_openapi.py``
keeps the two in step: every route is described and every description has a route, and a
schemathesis run against a real server checks that each status, content type, body and
header gre answers is the one described here.
"""

from __future__ import annotations

import functools

from prometheus_client import CONTENT_TYPE_LATEST

import gre
from gre.http.openapi_parts import (
    IMAGE_MEDIA_TYPES,
    NON_NEGATIVE,
    REQUEST_ID,
    REQUEST_ID_HEADER,
    RETRY_AFTER,
    ROUTING_ERRORS,
    Schema,
    closed_object,
    error_response,
    get_operation,
    image_errors,
    json_response,
    ref,
    timeout_header,
)
from gre.http.openapi_v2 import V2_SCHEMAS, v2_paths

#: ``POST /api/classify``'s errors: status -> (when, error codes), from the catalogue.
CLASSIFY_ERRORS = image_errors("bad_blob")
#: ``POST /api/features``' errors: classify's, with ``bad_blob`` for ``bad_top_k``.
FEATURES_ERRORS = image_errors("bad_top_k")

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
    "Error": closed_object(
        {
            "error": {
                "type": "string",
                "enum": sorted(
                    {c for _, codes in CLASSIFY_ERRORS.values() for c in codes}
                    | {c for _, codes in FEATURES_ERRORS.values() for c in codes}
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
        "items": closed_object(
            {
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                "label": {
                    "type": "string",
                    "description": "The class's synset words line (or label, or its index).",
                },
            }
        ),
    },
    "Features": {
        "type": "object",
        "minProperties": 1,
        "description": "Each blob asked for, by name: its values for the image, flattened in "
        "C, H, W order (pycaffe's `net.blobs[name].data[0].ravel()`).",
        "additionalProperties": {"type": "array", "items": {"type": "number"}},
    },
    "Model": closed_object(
        {
            "name": {"type": "string"},
            "engine": {"type": "string", "enum": ["caffe", "opencv", "torch", "null"]},
            "deploy": {"type": "string", "description": "Path of the deploy prototxt."},
            "weights": {"type": "string", "description": "Path of the caffemodel."},
            "version": closed_object(
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
            "reload": closed_object(
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
            "blobs": {
                "type": "array",
                "description": "Every blob of the net, input first: what /api/features may ask.",
                "items": closed_object(
                    {
                        "name": {"type": "string", "minLength": 1},
                        "shape": {
                            "type": ["array", "null"],
                            "items": {"type": "integer", "minimum": 1},
                            "description": "One image's shape (the batch dimension dropped); "
                            "null until a replica has loaded the net.",
                        },
                    }
                ),
            },
            "devices": {
                "type": "array",
                "items": {"type": "string", "pattern": "^(cpu|gpu:[0-9]+)$"},
                "uniqueItems": True,
            },
            "replicas": {
                "type": "array",
                "items": closed_object(
                    {
                        "name": {"type": "string"},
                        "state": {
                            "type": "string",
                            "enum": ["starting", "ready", "dead", "stopped"],
                        },
                        "pid": {"type": ["integer", "null"], "description": "While ready."},
                        "device": {"type": "string", "pattern": "^(cpu|gpu:[0-9]+)$"},
                        "restarts": NON_NEGATIVE,
                    }
                ),
            },
            "batching": closed_object(
                {
                    "max_batch_size": {"type": "integer", "minimum": 1},
                    "max_batch_bytes": {"type": "integer", "minimum": 1},
                    "max_queue_delay_ms": {"type": "number", "minimum": 0},
                    "max_queue_size": {"type": "integer", "minimum": 1},
                    "timeout_ms": {"type": "number", "exclusiveMinimum": 0},
                }
            ),
            "queue": closed_object({"waiting": NON_NEGATIVE, "in_flight": NON_NEGATIVE}),
            "batches_by_size": {
                "type": "object",
                "propertyNames": {"pattern": "^[1-9][0-9]*$"},
                "additionalProperties": {"type": "integer", "minimum": 1},
                "description": "Batches run so far, by their size.",
            },
        }
    ),
    "Readiness": closed_object(
        {
            "ready": {"type": "boolean"},
            "draining": {"type": "boolean"},
            "replicas": closed_object(
                {"ready": NON_NEGATIVE, "total": {"type": "integer", "minimum": 1}}
            ),
        }
    ),
}


def _image_operation(
    operation_id: str,
    summary: str,
    ok: Schema,
    errors: dict[int, tuple[str, tuple[str, ...]]],
    query: Schema,
) -> Schema:
    """An operation that takes one image as its body (classify, features): ``ok`` is its 200
    response, ``query`` its query parameter."""
    request_id = {"X-Request-Id": REQUEST_ID}
    responses: Schema = {"200": ok}
    for status, (description, codes) in errors.items():
        headers = {**request_id, "Retry-After": RETRY_AFTER} if status == 503 else request_id
        responses[str(status)] = error_response(codes, description, headers)
    return {
        "operationId": operation_id,
        "summary": summary,
        "parameters": [
            query,
            timeout_header(
                "A deadline in ms (a positive decimal number, e.g. `250` or `12.5`); only "
                "lowers the configured `timeout_ms`."
            ),
            REQUEST_ID_HEADER,
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


def _classify(classes: int | None) -> Schema:
    top_k: Schema = {"type": "integer", "minimum": 1}
    if classes:
        top_k["maximum"] = classes
    ok = json_response(
        ref("Classification"),
        "The image's top-k classes.",
        {"X-Request-Id": REQUEST_ID, "Server-Timing": _SERVER_TIMING},
    )
    query = {
        "name": "top_k",
        "in": "query",
        "description": "How many classes to answer, 1..classes (`classes` of GET "
        "/api/model); default `server.default_top_k`, at most the class count.",
        "schema": top_k,
    }
    return _image_operation("classify", "Classify one image", ok, CLASSIFY_ERRORS, query)


def _features(blobs: tuple[str, ...]) -> Schema:
    name: Schema = {"type": "string", "enum": list(blobs)} if blobs else {"type": "string"}
    ok = json_response(
        ref("Features"),
        "The blobs asked for, each flattened.",
        {"X-Request-Id": REQUEST_ID, "Server-Timing": _SERVER_TIMING},
    )
    query = {
        "name": "blob",
        "in": "query",
        "required": True,
        "style": "form",
        "explode": True,
        "description": "A blob of the net to answer (repeat for several: "
        "`?blob=fc7&blob=pool5`); `blobs` of GET /api/model lists them.",
        "schema": {"type": "array", "items": name, "minItems": 1},
    }
    summary = "One image's blobs (features) from the net"
    return _image_operation("features", summary, ok, FEATURES_ERRORS, query)


def _readiness(ready: bool, description: str) -> Schema:
    schema = {"allOf": [ref("Readiness")], "properties": {"ready": {"const": ready}}}
    return json_response(schema, f"{description} `replicas` counts those ready and all.")


def _page() -> Schema:
    """``GET /``: the try-it page (``gre.http.ui``), or 404 with ``server.ui = false``."""
    return get_operation(
        "ui",
        "The try-it page",
        {
            "200": {
                "description": "The page: choose an image, see its top-k classes.",
                "content": {"text/html": {"schema": {"type": "string"}}},
            },
            "404": error_response(("not_found",), "`server.ui` is false."),
        },
    )


@functools.cache
def openapi_document(classes: int | None, blobs: tuple[str, ...] = ()) -> Schema:
    """The OpenAPI 3.1 document (a JSON-ready dict), built once per ``classes`` and
    ``blobs``: the model's class count, the most ``top_k`` may ask for (``None`` while
    unknown: a net without configured labels reports it once a replica has loaded), and the
    net's blob names, what ``/api/features`` may ask for (empty: any string)."""
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
            "/api/features": {"post": _features(blobs)},
            "/api/model": get_operation(
                "model",
                "The model, engine, replicas, batching settings and batches so far",
                {"200": json_response(ref("Model"), "What is served, and how.")},
            ),
            "/healthz": get_operation(
                "healthz",
                "Liveness",
                {
                    "200": json_response(
                        closed_object({"status": {"const": "ok"}}), "The process answers."
                    )
                },
            ),
            "/readyz": get_operation(
                "readyz",
                "Readiness",
                {
                    "200": _readiness(
                        True, "Every replica has loaded and warmed up, and one is up now."
                    ),
                    "503": _readiness(False, "Starting, no replica up, or draining."),
                },
            ),
            "/metrics": get_operation(
                "metrics",
                "Prometheus metrics",
                {
                    "200": {
                        "description": f"Text exposition format ({CONTENT_TYPE_LATEST}).",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            ),
            "/openapi.json": get_operation(
                "openapi",
                "This document",
                {
                    "200": json_response(
                        {
                            "type": "object",
                            "required": ["openapi", "info", "paths"],
                            "properties": {"openapi": {"type": "string", "pattern": r"^3\.1\."}},
                        },
                        "The OpenAPI 3.1 description of gre's API.",
                    )
                },
            ),
            **v2_paths(),
        },
        "components": {
            "schemas": {**SCHEMAS, **V2_SCHEMAS},
            "responses": {
                "NotFound": error_response(("not_found",), "No endpoint at this path."),
                "MethodNotAllowed": error_response(
                    ("method_not_allowed",),
                    "The path does not take this method.",
                    {"Allow": {"required": True, "schema": {"type": "string"}}},
                ),
            },
        },
    }
