"""The try-it page at ``GET /`` (work in progress: routes filled in by the page's author)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from gre.service import Service


def ui_routes(service: Service) -> list[BaseRoute]:
    """The page's routes; none while ``server.ui`` is false."""
    return []
