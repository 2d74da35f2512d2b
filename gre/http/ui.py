"""The try-it page at ``GET /``: choose, drop or paste an image, see it previewed, its top-k
labels, the ``Server-Timing`` breakdown and gre's error JSON when refused.

Three static files shipped in the package (``gre/http/static/``: no CDN, no build step, no
framework): the page at ``/`` and its script and style sheet at ``/ui/app.js`` and
``/ui/style.css``. The page only calls the public API (``GET /api/model``,
``POST /api/classify``), as ``curl --data-binary`` does. Off with ``server.ui = false``: then
none of these routes exist and ``GET /`` is gre's usual 404 ``not_found``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gre.service import Service

#: Everything, the page included, may load only from gre itself: no inline script or style,
#: no other origin, no ``blob:`` or ``data:`` URLs. The page previews the image by decoding
#: the chosen file with ``createImageBitmap`` and drawing it on a canvas, which loads no URL,
#: so it needs no ``img-src blob:`` exception.
CONTENT_SECURITY_POLICY = "default-src 'self'"

#: Headers on the page and each of its assets. ``no-cache``: the browser revalidates, so an
#: upgraded gre is never run with a previous version's script.
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

#: URL path -> (file in gre/http/static/, media type).
FILES = {
    "/": ("index.html", "text/html"),
    "/ui/app.js": ("app.js", "text/javascript"),
    "/ui/style.css": ("style.css", "text/css"),
}


def _responder(content: bytes, media_type: str) -> Callable[[Request], Awaitable[Response]]:
    """A handler answering ``content`` with :data:`HEADERS`."""

    async def serve(request: Request) -> Response:
        return Response(content, media_type=media_type, headers=HEADERS)

    return serve


def ui_routes(service: Service) -> list[BaseRoute]:
    """The page's routes (its files read once, here); none while ``server.ui`` is false.

    Only ``GET /`` is in the API's schema: the script and style sheet are the page's parts.
    """
    if not service.config.server.ui:
        return []
    routes: list[BaseRoute] = []
    for path, (name, media_type) in FILES.items():
        content = (resources.files("gre.http") / "static" / name).read_bytes()
        handler = _responder(content, media_type)
        routes.append(Route(path, handler, methods=["GET"], include_in_schema=path == "/"))
    return routes
