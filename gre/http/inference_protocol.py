"""The Open Inference Protocol (KServe v2) over HTTP (work in progress)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from gre.service import Service


def inference_protocol_routes(service: Service) -> list[BaseRoute]:
    """The ``/v2`` routes."""
    return []
