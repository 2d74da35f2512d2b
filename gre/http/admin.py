"""``POST /admin/reload``: swap the model without dropping a request (as SIGHUP does).

Served only with ``server.admin_reload = true``, and then only to clients whose address is
in ``server.admin_clients`` (loopback by default): anyone who can reach it can make gre load
whatever its config file names now.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gre.http.errors import ApiError, ErrorCode
from gre.service import ReloadFailed, ReloadInProgress, Service


def client_allowed(host: str | None, allowed: Sequence[str]) -> bool:
    """Whether the client address ``host`` is in one of the ``allowed`` IP networks or
    addresses (``"127.0.0.1"``, ``"10.0.0.0/8"``, ``"::1"``); an IPv4-mapped IPv6 address
    counts as its IPv4 address, and an unknown or non-IP host (a Unix socket) is refused."""
    if host is None:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in ipaddress.ip_network(entry, strict=False) for entry in allowed)


async def admin_reload(request: Request) -> Response:
    """``POST /admin/reload``: re-read the config, start and warm up the new model's
    replicas, switch to them and retire the old ones; answers once the old are stopped.

    200 ``{"reloaded": true, "model", "version": {digest, loaded_at, generation},
    "duration_ms"}``; 403 ``forbidden`` from a client not in ``admin_clients``; 409
    ``reload_in_progress``; 422 ``reload_failed`` (the old model serves on).
    """
    service: Service = request.app.state.service
    host = request.client.host if request.client else None
    allowed = service.config.server.admin_clients
    if not client_allowed(host, allowed):
        raise ApiError(
            ErrorCode.FORBIDDEN,
            f"client {host} may not call /admin/*; server.admin_clients allows {allowed}",
        )
    start = time.perf_counter()
    try:
        generation = await service.reload()
    except ReloadInProgress as exc:
        raise ApiError(ErrorCode.RELOAD_IN_PROGRESS, str(exc)) from None
    except ReloadFailed as exc:
        raise ApiError(ErrorCode.RELOAD_FAILED, str(exc)) from None
    return JSONResponse(
        {
            "reloaded": True,
            "model": generation.model.name,
            "version": generation.describe_version(),
            "duration_ms": round((time.perf_counter() - start) * 1e3, 3),
        }
    )
