"""Servers a benchmark starts: gre, the peers (benchmarks.peers), the trivial endpoint.

Each is a context manager that starts a process on 127.0.0.1, yields its base URL
(``http://127.0.0.1:PORT``) once it answers, and stops it (SIGTERM, then SIGKILL) on exit.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from benchmarks.httpclient import Target
from benchmarks.machine import GRE_PACKAGES, package_versions
from gre.testing import answers, free_port, running, stop
from gre.testing import running_gre as running_gre_process

__all__ = [
    "GRE_BENCH_SETTINGS",
    "answers",
    "free_port",
    "gre_command",
    "gre_flags",
    "gre_for_script",
    "log_path",
    "peer_names",
    "running_gre",
    "running_server",
    "server_versions",
    "serving",
    "stop",
    "trivial_endpoint",
]

ROOT = Path(__file__).resolve().parent.parent
#: gre's settings for benchmarks unless told otherwise: one JSON log line per request is an
#: operations feature whose cost (~30 us) the peers do not pay.
GRE_BENCH_SETTINGS = ("access_log=false",)


@contextmanager
def serving(
    command: Sequence[str], ready_url: str, log: Path, timeout_s: float = 180.0
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` (output to ``log``, in the repository) until ``ready_url`` answers 200;
    stop it on exit (SIGTERM, then SIGKILL).

    Raises:
        gre.testing.StartError: it exits or is not ready within ``timeout_s`` seconds; the
            message ends with the last lines of its log.
    """
    with running(command, log=log, ready=ready_url, cwd=ROOT, timeout_s=timeout_s) as process:
        yield process


def log_path(name: str, port: int) -> Path:
    """Where a started server's output goes: ``$TMPDIR/gre-bench/<name>-<port>.log``."""
    directory = Path(tempfile.gettempdir()) / "gre-bench"
    directory.mkdir(exist_ok=True)
    return directory / f"{name}-{port}.log"


def gre_flags(
    engine: str, args: Sequence[str] = (), settings: Sequence[str] = GRE_BENCH_SETTINGS
) -> list[str]:
    """``gre serve``'s flags after ``--port``: ``--engine ENGINE ARGS --set S...``."""
    return ["--engine", engine, *args, *(x for setting in settings for x in ("--set", setting))]


def gre_command(
    port: int, engine: str, args: Sequence[str] = (), settings: Sequence[str] = GRE_BENCH_SETTINGS
) -> list[str]:
    """``python -m gre serve --port PORT --engine ENGINE ARGS --set S...`` as a list."""
    return ["python", "-m", "gre", "serve", "--port", str(port), *gre_flags(engine, args, settings)]


@contextmanager
def running_gre(
    *, port: int, engine: str = "opencv", args: Sequence[str] = (),
    settings: Sequence[str] = GRE_BENCH_SETTINGS,
) -> Iterator[str]:  # fmt: skip
    """:func:`gre_command` run (with this interpreter); yields its base URL once ``/readyz``
    answers 200 (every replica loaded and warmed up).

    Raises:
        gre.testing.StartError: it exited or was not ready within 180 s.
    """
    flags = gre_flags(engine, args, settings)
    log = log_path(f"gre-{engine}", port)
    with running_gre_process(*flags, port=port, log=log, cwd=ROOT) as server:
        yield server.url


@contextmanager
def gre_for_script(config: Path | None, settings: Sequence[str]) -> Iterator[tuple[Target, int]]:
    """gre serving ``config`` (default: the embedded model) with its access log off and
    ``settings`` (``KEY=VALUE``); yields its ``/api/classify`` target and the front end's pid
    (for RSS), as the overload and soak scripts need."""
    flags = [x for s in [*GRE_BENCH_SETTINGS, *settings] for x in ("--set", s)]
    if config:
        flags += ["--config", str(config)]
    port = free_port()
    with running_gre_process(*flags, port=port, log=log_path("gre", port), cwd=ROOT) as server:
        yield Target.parse(f"{server.url}/api/classify"), server.process.pid


@contextmanager
def trivial_endpoint() -> Iterator[str]:
    """benchmarks.trivial_server on a free port; yields its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.trivial_server", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    with serving(command, base + "/", log_path("trivial", port), timeout_s=30):
        yield base


def peers_module() -> Any:
    """``benchmarks.peers`` (PEER_NAMES, running_peer, peer_versions).

    Raises:
        RuntimeError: it is not there or fails to import.
    """
    try:
        return importlib.import_module("benchmarks.peers")
    except ImportError as exc:
        raise RuntimeError(
            f"the peer servers (benchmarks/peers) cannot be imported: {exc}"
        ) from exc


def peer_names() -> tuple[str, ...]:
    """The peers benchmarks.peers can start (``()`` when it is missing)."""
    try:
        return tuple(peers_module().PEER_NAMES)
    except RuntimeError:
        return ()


def running_server(
    name: str, *, port: int, engine: str, gre_args: Sequence[str] = (),
    gre_settings: Sequence[str] = GRE_BENCH_SETTINGS,
) -> AbstractContextManager[str]:  # fmt: skip
    """gre or a peer, serving the same model with ``engine``; yields its base URL."""
    if name == "gre":
        return running_gre(port=port, engine=engine, args=gre_args, settings=gre_settings)
    peers = peers_module()
    if name not in peers.PEER_NAMES:
        raise ValueError(f"unknown server {name!r}: gre or one of {', '.join(peers.PEER_NAMES)}")
    manager: AbstractContextManager[str] = peers.running_peer(name, port=port, engine=engine)
    return manager


def server_versions(name: str) -> dict[str, str]:
    """The versions that matter for ``name``'s figures (for a peer, from its venv, which
    this may set up; ``{"error": why}`` when they cannot be read)."""
    if name == "gre":
        return package_versions(GRE_PACKAGES)
    try:
        return dict(peers_module().peer_versions(name))
    except Exception as exc:  # an unknown or broken peer fails its own runs, not the report
        return {"error": f"{type(exc).__name__}: {exc}"}
