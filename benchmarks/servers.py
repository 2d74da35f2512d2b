"""Servers a benchmark starts: gre, the peers (benchmarks.peers), the trivial endpoint.

Each is a context manager that starts a process on 127.0.0.1, yields its base URL
(``http://127.0.0.1:PORT``) once it answers, and stops it (SIGTERM, then SIGKILL) on exit.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from benchmarks.httpclient import Target
from benchmarks.machine import GRE_PACKAGES, package_versions
from tests.support import free_port, stop
from tests.support import running_server as running_gre_server

ROOT = Path(__file__).resolve().parent.parent
#: gre's settings for benchmarks unless told otherwise: one JSON log line per request is an
#: operations feature whose cost (~30 us) the peers do not pay.
GRE_BENCH_SETTINGS = ("access_log=false",)


def answers(url: str) -> bool:
    """GET ``url`` answers 200 within 2 s (no proxy: the server is local)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def serving(
    command: Sequence[str], ready_url: str, log: Path, timeout_s: float = 180.0
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` (output to ``log``) until ``ready_url`` answers 200; stop it on exit.

    Raises:
        RuntimeError: it exits or is not ready within ``timeout_s``; the message ends with
            the last lines of its log.
    """
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        end = time.monotonic() + timeout_s
        while not answers(ready_url):
            if process.poll() is not None or time.monotonic() > end:
                state = (
                    f"exited with {process.returncode}"
                    if process.poll() is not None
                    else (f"not ready after {timeout_s:.0f} s")
                )
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
                raise RuntimeError(f"{' '.join(command)}: {state}; its log ({log}):\n{tail}")
            time.sleep(0.1)
        yield process
    finally:
        stop(process)


def log_path(name: str, port: int) -> Path:
    """Where a started server's output goes: ``$TMPDIR/gre-bench/<name>-<port>.log``."""
    directory = Path(tempfile.gettempdir()) / "gre-bench"
    directory.mkdir(exist_ok=True)
    return directory / f"{name}-{port}.log"


def gre_command(
    port: int, engine: str, args: Sequence[str] = (), settings: Sequence[str] = GRE_BENCH_SETTINGS
) -> list[str]:
    """``python -m gre serve --port PORT --engine ENGINE ARGS --set S...`` as a list."""
    sets = [x for setting in settings for x in ("--set", setting)]
    return ["python", "-m", "gre", "serve", "--port", str(port), "--engine", engine, *args, *sets]


@contextmanager
def running_gre(
    *, port: int, engine: str = "opencv", args: Sequence[str] = (),
    settings: Sequence[str] = GRE_BENCH_SETTINGS,
) -> Iterator[str]:  # fmt: skip
    """:func:`gre_command` run; yields its base URL once ``/readyz`` answers 200 (every
    replica loaded and warmed up)."""
    command = [sys.executable, *gre_command(port, engine, args, settings)[1:]]
    base = f"http://127.0.0.1:{port}"
    with serving(command, f"{base}/readyz", log_path(f"gre-{engine}", port)):
        yield base


@contextmanager
def gre_for_script(config: Path | None, settings: Sequence[str]) -> Iterator[tuple[Target, int]]:
    """gre serving ``config`` (default: the embedded model) with its access log off and
    ``settings`` (``KEY=VALUE``); yields its ``/api/classify`` target and the front end's pid
    (for RSS), as the overload and soak scripts need."""
    flags = [x for s in [*GRE_BENCH_SETTINGS, *settings] for x in ("--set", s)]
    if config:
        flags += ["--config", str(config)]
    with tempfile.TemporaryDirectory() as tmp, running_gre_server(Path(tmp), *flags) as server:
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
