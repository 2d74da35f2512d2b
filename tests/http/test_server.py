"""The server's wiring: the ``[server]`` limit keys reach uvicorn and gre's protocol, and the
open-file limit is raised to fit ``max_connections``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gre.config import ConfigError, load_config
from gre.http.protocol import LimitedHttpProtocol
from gre.http.server import SPARE_FILES, build_server


def test_limit_keys_from_the_environment_reach_uvicorn_and_the_protocol() -> None:
    environ = {
        "GRE_HEADER_TIMEOUT_S": "2.5",
        "GRE_BODY_TIMEOUT_S": "7",
        "GRE_MAX_HEADER_BYTES": "4096",
        "GRE_MAX_CONNECTIONS": "7",
        "GRE_KEEP_ALIVE_TIMEOUT_S": "9",
        "GRE_BACKLOG": "64",
    }
    config = load_config(environ=environ)
    uvicorn_config = build_server(config).config
    assert uvicorn_config.timeout_keep_alive == 9
    assert uvicorn_config.backlog == 64
    assert uvicorn_config.limit_concurrency is None  # max_connections replaces it
    protocol = uvicorn_config.http
    assert isinstance(protocol, type)
    assert issubclass(protocol, LimitedHttpProtocol)
    limits = protocol.limits
    assert (limits.header_timeout_s, limits.body_timeout_s) == (2.5, 7.0)
    assert (limits.max_header_bytes, limits.max_connections) == (4096, 7)


@pytest.mark.parametrize(
    ("key", "value"),
    [("header_timeout_s", "0"), ("body_timeout_s", "-1"), ("max_header_bytes", "100")],
)
def test_unusable_limits_are_config_errors(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"server.{key}"):
        load_config(overrides={key: value})


def test_open_file_limit_is_raised_to_fit_max_connections() -> None:
    # In a child process: the limit is process-wide.
    script = (
        "import resource\n"
        "from gre.http.server import raise_open_file_limit\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (100, hard))\n"
        "raise_open_file_limit(1000)\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    soft, hard = (int(n) for n in out.split())
    needed = 1000 + SPARE_FILES
    assert soft == (needed if hard == -1 else min(needed, hard))
