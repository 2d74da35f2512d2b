"""API errors: every error answer is JSON ``{"error": "<code>", "message": "<what was wrong>"}``."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    500: "internal_error",
}


class ApiError(Exception):
    """An error answer: HTTP ``status``, machine-readable ``code``, human ``message``."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The JSON error body with ``status`` and ``headers``."""
    return JSONResponse({"error": code, "message": message}, status, headers=dict(headers or {}))


async def handle_api_error(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for :class:`ApiError`."""
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (404 unknown path, 405 wrong method) in gre's JSON shape."""
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = {
        404: f"no endpoint at {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}",
    }.get(exc.status_code, str(exc.detail))
    return error_response(exc.status_code, code, message, exc.headers)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    """Anything unforeseen: a JSON 500 instead of a text traceback."""
    return error_response(500, "internal_error", f"{type(exc).__name__}: {exc}")
