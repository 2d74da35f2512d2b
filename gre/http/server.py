"""Run the service under Uvicorn (uvloop + httptools), with a graceful drain on SIGTERM/SIGINT.

Under systemd (``Type=notify``) it sends READY=1 once every replica is warmed up, WATCHDOG=1
from the event loop, RELOADING=1 and READY=1 around a reload (SIGHUP), and STOPPING=1 when
the drain begins.

The first SIGTERM or SIGINT turns ``/readyz`` 503 and new requests 503, lets queued and
in-flight requests finish, then stops the server and the replicas; exit status 0. A second
signal stops at once.

Connections are uvicorn's httptools protocol with gre's read deadlines, head size limit and
connection limit (:mod:`gre.http.protocol`; the ``[server]`` keys, README "Limits").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Generator
from types import FrameType
from typing import Any

import uvicorn
import uvloop

from gre.config import Config
from gre.heap import freeze_startup_objects
from gre.http.app import create_app
from gre.http.budget import BodyBudget
from gre.http.direct_classify import ClassifyDirectly
from gre.http.front_ends import FrontEnds
from gre.http.protocol import Limits, limited_protocol
from gre.notify import SystemdNotifier
from gre.replicas.plan import http_workers
from gre.service import ReloadError, Service

log = logging.getLogger("gre.http.server")

#: Descriptors besides client connections: replicas' sockets, logs, libraries.
SPARE_FILES = 256


class GreServer(uvicorn.Server):
    """Uvicorn's server with gre's drain-then-exit signal handling and start-up supervision."""

    def __init__(self, config: uvicorn.Config, service: Service) -> None:
        super().__init__(config)
        self.service = service
        self.exit_code = 0
        self.notifier = SystemdNotifier()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: With ``server.workers > 1``: the HTTP worker processes; this process listens on
        #: nothing itself then, and serves their requests.
        self.front_ends: FrontEnds | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Unlike uvicorn's, re-raises nothing afterwards: a drained shutdown exits 0.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        originals[signal.SIGHUP] = signal.signal(signal.SIGHUP, self.handle_reload)
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.service.draining or self._loop is None:
            self.should_exit = True
            self.force_exit = self.service.draining
            return
        self._loop.call_soon_threadsafe(self._spawn, self._drain())

    def handle_reload(self, sig: int, frame: FrameType | None) -> None:
        """SIGHUP (``systemctl reload gre``): reload the model in the background."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._spawn, self._reload())

    async def _reload(self) -> None:
        # sd_notify(3): RELOADING=1 comes with the monotonic clock, and READY=1 ends it.
        self.notifier.notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            await self.service.reload()  # logs and counts a failure itself
        except ReloadError:
            pass
        finally:
            self.notifier.notify("READY=1")

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        self.notifier.notify("STOPPING=1")
        await self.service.drain()  # /readyz 503 and new requests 503 from its start
        if self.front_ends is not None:
            await self.front_ends.stop()  # nothing of theirs is in flight any more
        self.should_exit = True  # uvicorn's shutdown, then the lifespan's Service.stop

    def _fatal(self, error: str) -> None:
        log.error("exiting: %s", error)
        self.exit_code = 1
        self.should_exit = True

    async def _start_replicas(self) -> None:
        self.service.on_fatal = self._fatal
        log.info("%s", self.service.summary())
        try:
            await self.service.start()
        except Exception as exc:  # any failure to start is fatal: systemd restarts us
            if not self.exit_code:  # not already reported through on_fatal
                self._fatal(f"start-up failed: {exc}")
            return
        # Every replica has loaded its net and run a warm-up batch: /readyz is 200 now.
        log.info("ready: %d replica(s) warmed up", self.service.readiness().replicas_ready)
        freeze_startup_objects("front end")
        self.notifier.notify("READY=1")
        self._spawn(self.notifier.watchdog())

    async def serve(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        if self.front_ends is not None:
            try:
                await self.front_ends.start()
            except OSError as exc:
                log.error("cannot listen on %s:%d: %s", self.config.host, self.config.port, exc)
                self.exit_code = 1
                return
            sockets = []  # the workers listen
        self._spawn(self._start_replicas())
        try:
            await super().serve(sockets)  # type: ignore[arg-type]
        finally:
            if self.front_ends is not None:
                await self.front_ends.stop()


def build_server(config: Config, reload_config: Callable[[], Config] | None = None) -> GreServer:
    """The server for ``config``; raises :class:`StartupError` for an unusable model.
    ``reload_config``: as :func:`run`."""
    service = Service(config, reload_config=reload_config)
    app = create_app(service, start_replicas=False)
    server = config.server
    budget = BodyBudget(server.max_inflight_body_bytes)  # one for all connections
    service.metrics.inflight_body_bytes.set_function(lambda: budget.held)
    limits = Limits(
        header_timeout_s=server.header_timeout_s,
        body_timeout_s=server.body_timeout_s,
        max_header_bytes=server.max_header_bytes,
        max_connections=server.max_connections,
        max_body_bytes=server.max_body_bytes,
        budget=budget,
        on_reject=lambda reason: service.metrics.rejected.labels(reason).inc(),
    )
    uvicorn_config = uvicorn.Config(
        app,
        host=server.host,
        port=server.port,
        # httptools, with read deadlines and max_connections; classify answered directly.
        http=limited_protocol(limits, ClassifyDirectly(service)),
        ws="none",  # gre serves no WebSockets: an Upgrade request is plain HTTP
        loop="none",
        lifespan="on",
        access_log=False,
        log_level=server.log_level,
        log_config=None,
        timeout_keep_alive=server.keep_alive_timeout_s,
        limit_concurrency=None,  # max_connections instead: idle keep-alives are not load
        backlog=server.backlog,
    )
    gre_server = GreServer(uvicorn_config, service)
    workers = http_workers(server.workers, service.plans)
    if server.workers == 0:
        log.info("server.workers = 0: %d HTTP worker process(es) for this plan", workers)
    if workers > 1:
        resolved = server.model_copy(update={"workers": workers})
        gre_server.front_ends = FrontEnds(resolved, app, service.metrics, service)
    return gre_server


def raise_open_file_limit(connections: int) -> None:
    """Raise the soft open-file limit (RLIMIT_NOFILE) towards the hard one so that
    ``connections`` sockets fit beside the replicas' and the process's own descriptors; logs a
    warning where the hard limit is too low (systemd/gre.service sets 65536)."""
    needed = connections + SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            log.warning(
                "open-file limit %d is below max_connections + %d: connections beyond it "
                "are refused by the kernel (raise LimitNOFILE / ulimit -n)",
                target,
                SPARE_FILES,
            )


def run(config: Config, reload_config: Callable[[], Config] | None = None) -> int:
    """Serve until drained; returns the process exit status (0, or 1 if replicas failed).

    ``reload_config`` re-reads the configuration for a reload (SIGHUP, ``POST
    /admin/reload``), raising :class:`gre.config.ConfigError`; without it a reload re-uses
    ``config``.
    """
    raise_open_file_limit(config.server.max_connections)
    server = build_server(config, reload_config)
    uvloop.run(server.serve())
    return server.exit_code
