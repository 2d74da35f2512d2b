"""Start a peer server from its own venv on 127.0.0.1, wait until it classifies, stop it and
everything it started.

A peer runs ``<venv>/bin/python -m benchmarks.peers.<name>.server --port P --engine E`` with
the repository on ``PYTHONPATH`` (after the venv's ``pipeline-site``, where it has one), in a
session (process group) of its own, and with ``GRE_PEER_RUN=<its run folder>`` in its
environment. Stopping sends SIGTERM to the group, SIGKILL after a grace period, then SIGKILLs
any process still carrying that ``GRE_PEER_RUN`` value, which catches what left the group (Ray's
raylet, GCS and workers; Triton's ``tritonserver`` and its stub stay in the group): nothing
started by the peer outlives it, and nothing else is touched.

Only the standard library (and :mod:`gre.testing`, which is too) here: this module is
imported inside the peers' venvs too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from benchmarks.peers.venvs import ROOT, check_name, ensure_venv, pipeline_path
from gre.testing import StartError, running

#: SIGTERM to SIGKILL, s: long enough for a graceful shutdown (Ray's takes a few seconds).
STOP_GRACE_S = 30.0


class PeerStartError(StartError):
    """The peer exited or did not answer in time; the message ends with its log."""


def probe_image() -> bytes:
    """An 8x8 grey 24-bit BMP: a valid image for every peer, made without any library."""
    width = height = 8
    row = bytes([128, 128, 128]) * width
    pixels = (row + bytes(-len(row) % 4)) * height
    header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return header + info + pixels


def classifies(url: str) -> int | None:
    """POST :func:`probe_image` to ``{url}/api/classify``: the HTTP status, ``None`` when
    nothing answers. Proxies from the environment are bypassed (the peer is local)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(f"{url}/api/classify", data=probe_image(), method="POST")
    try:
        with opener.open(request, timeout=10) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


@contextlib.contextmanager
def running_peer(
    name: str,
    *,
    port: int,
    engine: str = "opencv",
    start_timeout_s: float = 300.0,
    log: Path | None = None,
) -> Iterator[str]:
    """Run peer ``name`` on ``127.0.0.1:port`` with gre's ``engine``; yields its base URL
    (``http://127.0.0.1:PORT``) once a probe image POSTed to ``/api/classify`` gets a 200
    (which also warms the net up). Builds the peer's venv first if missing (minutes).

    On exit the server and every process it started are stopped. The server's output goes to
    ``log`` when given (kept), else to a temporary file removed on exit.

    Raises:
        ValueError: unknown peer.
        benchmarks.peers.venvs.PeerSetupError: its venv cannot be built.
        PeerStartError: it exited, or did not classify within ``start_timeout_s``.
    """
    check_name(name)
    venv = ensure_venv(name)
    run_dir = Path(tempfile.mkdtemp(prefix=f"gre-peer-{name}-"))
    log_path = log or run_dir / "server.log"
    url = f"http://127.0.0.1:{port}"
    env = {
        "PYTHONPATH": os.pathsep.join(
            filter(None, [*pipeline_path(name), str(ROOT), os.environ.get("PYTHONPATH")])
        ),
        "PATH": os.pathsep.join([str(venv / "bin"), os.environ.get("PATH", "")]),
        "VIRTUAL_ENV": str(venv),
        "GRE_PEER_RUN": str(run_dir),
        # No usage reports, no tracking: the machine reaches nothing outside anyway.
        "RAY_USAGE_STATS_ENABLED": "0",
        "BENTOML_DO_NOT_TRACK": "True",
        # BentoML's home (its Prometheus files, model store) per run, not ~/bentoml.
        "BENTOML_HOME": str(run_dir / "bentoml"),
    }
    command = [str(venv / "bin" / "python"), "-m", f"benchmarks.peers.{name}.server"]
    try:
        with running(
            [*command, "--port", str(port), "--engine", engine],
            log=log_path,
            ready=lambda: classifies(url) == 200,
            env=env,
            cwd=ROOT,
            # A group of its own, for _stop's killpg; the GRE_PEER_RUN sweep catches the rest.
            start_new_session=True,
            timeout_s=start_timeout_s,
            poll_s=0.5,
            name=f"peer {name} at {url}",
            error=PeerStartError,
            stopper=lambda process: _stop(process, str(run_dir)),
        ):
            yield url
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _stop(process: subprocess.Popen[bytes], marker: str) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(STOP_GRACE_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    # Daemons a framework started in sessions of their own; they may still be exiting.
    deadline = time.monotonic() + 10
    while (left := processes_of(marker)) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


def processes_of(run_dir: str) -> list[int]:
    """Live processes whose environment has ``GRE_PEER_RUN=run_dir`` (from /proc)."""
    needle = f"GRE_PEER_RUN={run_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found
