"""Start a real server process, wait until it is ready, stop it: for tests and benchmarks.

One launcher for every real server the tests and benchmarks start (gre itself, the peers in
their own venvs, the trivial endpoint). Standard library only and nothing from the rest of
``gre``: the peers import it inside their own venvs, with only the repository on
``PYTHONPATH``, and the service never imports it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: SIGTERM to SIGKILL, s: a gre server drains its queue in this time.
STOP_GRACE_S = 30.0
#: How many of its log's last lines a :class:`StartError` ends with.
LOG_TAIL_LINES = 40

#: A readiness probe: a callable that says whether the process is ready, or a URL that is
#: ready once a GET answers 200 (:func:`answers`).
Probe = Callable[[], bool] | str


class StartError(RuntimeError):
    """A started process exited, or was not ready in time; the message ends with the last
    lines of its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on now (the OS's pick; another process may
    take it before the caller binds it, which is unlikely on a test machine)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def stop(process: subprocess.Popen[Any], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM ``process`` if it still runs (a gre server drains), SIGKILL it after
    ``grace_s`` seconds; returns once it has exited (reaped)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def answers(url: str, timeout_s: float = 2.0) -> bool:
    """Whether a GET of ``url`` answers 200 within ``timeout_s`` seconds. Proxies from the
    environment are bypassed: the servers started here are local."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):  # HTTPError (non-2xx) is a URLError
        return False


def log_tail(log: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of ``log`` (``""`` when it does not exist)."""
    if not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def running(
    command: Sequence[str],
    *,
    log: Path,
    ready: Probe | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    start_new_session: bool = False,
    timeout_s: float = 180.0,
    poll_s: float = 0.1,
    name: str | None = None,
    error: type[StartError] = StartError,
    stopper: Callable[[subprocess.Popen[bytes]], None] = stop,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` until ``ready`` passes; yield the process; stop it on exit.

    Args:
        command: the program and its arguments.
        log: where its stdout and stderr go (created or truncated; kept afterwards).
        ready: polled every ``poll_s`` seconds until it passes; ``None`` yields at once.
        env: variables added to (or replacing those of) this process's environment.
        cwd: its working directory (default: this process's).
        start_new_session: run it in a session (and process group) of its own, so that
            ``stopper`` can signal everything it starts.
        timeout_s: how long ``ready`` may take, s.
        name: what the error message calls it (default: the command line).
        error: the :class:`StartError` subclass to raise.
        stopper: stops the process on exit (default :func:`stop`: SIGTERM, then SIGKILL).

    Raises:
        StartError (or ``error``): it exited before ``ready`` passed, or ``ready`` did not
            pass within ``timeout_s``; the message ends with the last lines of ``log``.
    """
    probe: Callable[[], bool] | None = (lambda: answers(ready)) if isinstance(ready, str) else ready
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(command),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,  # never the terminal's (or pytest's) stdin
            cwd=cwd,
            env={**os.environ, **env} if env is not None else None,
            start_new_session=start_new_session,
        )
    try:
        if probe is not None:
            _wait_ready(process, probe, log, timeout_s, poll_s, name or " ".join(command), error)
        yield process
    finally:
        stopper(process)


def _wait_ready(
    process: subprocess.Popen[bytes],
    probe: Callable[[], bool],
    log: Path,
    timeout_s: float,
    poll_s: float,
    name: str,
    error: type[StartError],
) -> None:
    end = time.monotonic() + timeout_s
    while not probe():
        if process.poll() is not None:
            state = f"exited with {process.returncode}"
        elif time.monotonic() > end:
            state = f"not ready after {timeout_s:g} s"
        else:
            time.sleep(poll_s)
            continue
        raise error(f"{name}: {state}; its log ({log}):\n{log_tail(log)}")


@dataclass
class RunningGre:
    """A ``gre serve`` process on 127.0.0.1, its base URL (``http://127.0.0.1:PORT``) and the
    file its output goes to."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        """Everything the server has written so far (stdout and stderr)."""
        return self.log.read_text(errors="replace")


@contextmanager
def running_gre(
    *args: str,
    port: int | None = None,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    ready: bool = True,
    timeout_s: float = 180.0,
) -> Iterator[RunningGre]:
    """``python -m gre serve --port PORT ARGS`` (this interpreter), yielded once ``/readyz``
    answers 200 (every replica loaded and warmed up) unless ``ready`` is false; stopped on
    exit (SIGTERM: it drains; SIGKILL after :data:`STOP_GRACE_S`).

    ``port`` defaults to a free one; ``log`` to ``$TMPDIR/gre-testing/gre-PORT.log``; ``env``
    is added to this process's environment.

    Raises:
        StartError: it exited, or was not ready within ``timeout_s`` seconds.
    """
    port = free_port() if port is None else port
    if log is None:
        directory = Path(tempfile.gettempdir()) / "gre-testing"
        directory.mkdir(exist_ok=True)
        log = directory / f"gre-{port}.log"
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "gre", "serve", "--port", str(port), *args]
    probe = f"{url}/readyz" if ready else None
    with running(
        command, log=log, ready=probe, env=env, cwd=cwd, timeout_s=timeout_s, name="gre serve"
    ) as process:
        yield RunningGre(process, url, log)
