"""The pieces every part of gre's OpenAPI document is built of (``gre.http.openapi``,
``gre.http.openapi_v2``): closed objects, JSON and error responses from the error catalogue,
the headers the image operations share."""

from __future__ import annotations

from typing import Any

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


def image_errors(*exclude: str) -> dict[int, tuple[str, tuple[str, ...]]]:
    """The errors of an operation that takes an image, from the catalogue: status -> (when,
    error codes); every code but routing's, ``/admin``'s and ``exclude``."""
    by_status: dict[int, list[ErrorCode]] = {}
    for code in ErrorCode:
        if code.value not in ROUTING_ERRORS + ADMIN_ERRORS + exclude:
            by_status.setdefault(code.status, []).append(code)
    errors = {}
    for status, codes in sorted(by_status.items()):
        when = "; ".join(f"`{c.value}`: {c.facts.description}" for c in codes)
        if any(c.facts.retry_after for c in codes):
            when += ". Retry after `Retry-After` seconds."
        errors[status] = (when, tuple(c.value for c in codes))
    return errors


def closed_object(properties: Schema, description: str | None = None) -> Schema:
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


def json_response(schema: Schema, description: str, headers: Schema | None = None) -> Schema:
    """A response with a JSON body."""
    response: Schema = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        response["headers"] = headers
    return response


def error_response(
    codes: tuple[str, ...], description: str, headers: Schema | None = None
) -> Schema:
    """An error response: ``{"error": one of codes, "message": ...}``."""
    schema = {
        "allOf": [{"$ref": "#/components/schemas/Error"}],
        "properties": {"error": {"enum": list(codes)}},
    }
    return json_response(schema, description, headers)


NON_NEGATIVE = {"type": "integer", "minimum": 0}

REQUEST_ID = {
    "description": "The client's X-Request-Id, or a new one when it sent none.",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
}
#: The request header every classifying operation takes: the client's id for the request.
REQUEST_ID_HEADER: Schema = {
    "name": "X-Request-Id",
    "in": "header",
    "description": "Echoed in the response and logged; a new one when absent.",
    "schema": {"type": "string"},
}


def timeout_header(description: str) -> Schema:
    """The ``X-Request-Timeout-Ms`` request header (``gre.http.request_parts.parse_timeout``)."""
    return {
        "name": "X-Request-Timeout-Ms",
        "in": "header",
        "description": description,
        "schema": {"type": "string", "pattern": r"^[0-9]{1,9}(\.[0-9]{1,6})?$"},
    }


RETRY_AFTER = {
    "description": "Seconds to wait before retrying.",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}


def get_operation(operation_id: str, summary: str, responses: Schema) -> Schema:
    return {"get": {"operationId": operation_id, "summary": summary, "responses": responses}}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}
