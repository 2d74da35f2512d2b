"""The service: one model, its replicas and the scheduler, from start-up to drain.

:class:`Service` is the façade the HTTP layer uses, and the only one: admit, submit, result,
cancel, drain, readiness, describe. The scheduler and the replica pool behind it are its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gre.batching.errors import ReplicaStartError
from gre.batching.queue import Pending
from gre.batching.scheduler import Admission, Completed, Scheduler
from gre.config import Config
from gre.messages import BatchResult, Prediction, Ready, ReplicaSpec
from gre.metrics import GpuCollector, Metrics, ReplicaCollector
from gre.model.labels import answer
from gre.model.loader import ModelError, load_model
from gre.replicas.plan import PlanError, ReplicaPlan, discover_and_plan
from gre.replicas.pool import ReplicaHandle, ReplicaPool, SlotState
from gre.replicas.replica import Replica

log = logging.getLogger("gre.service")


class StartupError(RuntimeError):
    """The model cannot be served as configured: its files (:class:`ModelError`), the
    devices (:class:`PlanError`), or replicas that fail to start; the message says why."""


@dataclass(frozen=True)
class Readiness:
    """``GET /readyz``'s facts: ``ready`` (every replica warmed up once, one up now, not
    draining), ``draining``, and the replicas ready now out of ``replicas_total``."""

    ready: bool
    draining: bool
    replicas_ready: int
    replicas_total: int


class Service:
    """Replicas + scheduler for one model.

    Construction validates the model (:func:`gre.model.loader.load_model`) and plans the
    replicas, raising :class:`StartupError` before any process starts. :meth:`start` starts
    the replicas; :meth:`admit`, :meth:`submit` and :meth:`result` serve a request;
    :meth:`drain` then :meth:`stop` end it.

    Args:
        config: the whole configuration.
        replica: makes the handle of each replica slot (default: a replica process; tests of
            the HTTP layer pass a fake).

    Attributes:
        on_fatal: called with the error when a replica cannot be started any more (the
            server then exits non-zero).
    """

    def __init__(
        self, config: Config, replica: Callable[[ReplicaSpec], ReplicaHandle] = Replica
    ) -> None:
        self.config = config
        try:
            self.model = load_model(config)
            _, _, self.plans = discover_and_plan(config.replicas, self.model.engine)
        except (ModelError, PlanError) as exc:
            raise StartupError(str(exc)) from exc
        self._scheduler = Scheduler(config.batching)
        self.num_classes: int | None = len(self.model.labels) if self.model.labels else None
        #: What each replica slot runs, in slot order.
        self.specs = [self._spec(plan) for plan in self.plans]
        self._pool = ReplicaPool(
            self.specs,
            self._scheduler,
            config.replicas,
            on_fatal=lambda error: self.on_fatal(error),
            on_ready=self._check_classes,
            replica=replica,
        )
        self.on_fatal: Callable[[str], None] = lambda error: None
        self._drain: asyncio.Task[bool] | None = None
        self.metrics = Metrics(config.batching.max_batch_size)
        self.metrics.queue_depth.set_function(lambda: len(self._scheduler.queue))
        self.metrics.registry.register(
            ReplicaCollector(self._pool.states, lambda: self._pool.restarts)
        )
        self.metrics.registry.register(GpuCollector())
        self._scheduler.on_batch = self._observe_batch

    def _observe_batch(self, replica: str, size: int, result: BatchResult) -> None:
        slot = next(s for s in self._pool.slots if s.name == replica)
        self.metrics.observe_batch(
            replica, slot.device, size, result.preprocess_ms / 1e3, result.inference_ms / 1e3
        )

    def _spec(self, plan: ReplicaPlan) -> ReplicaSpec:
        model = self.config.model
        return ReplicaSpec(
            index=plan.index,
            engine=self.model.engine,
            deploy=model.deploy,
            weights=model.weights,
            output_blob=model.output_blob,
            apply_softmax=model.apply_softmax,
            num_classes=len(self.model.labels or ()) or 1000,
            device=plan.device,
            threads=plan.threads,
            decode_threads=self.config.replicas.decode_threads,
            input_shape=self.model.net.input_shape,
            preprocess=self.config.preprocess.model_dump(),
            max_batch_size=self.config.batching.max_batch_size,
        )

    def _check_classes(self, info: Ready) -> None:
        if self.num_classes is None:
            self.num_classes = info.num_classes
        if info.num_classes != self.num_classes:
            raise ReplicaStartError(
                f"the net outputs {info.num_classes} classes but {self.num_classes} labels "
                "are configured (model.synset_words / model.labels)"
            )

    # Life cycle

    async def start(self) -> None:
        """Start the replicas and wait until each has loaded its net and run a warm-up batch.

        Raises:
            StartupError: a replica failed ``start_attempts`` times, or its class count
                disagrees with the labels.
        """
        self._pool.start()
        try:
            await self._pool.wait_started()
        except ReplicaStartError as exc:
            raise StartupError(str(exc)) from exc

    @property
    def draining(self) -> bool:
        """Whether :meth:`drain` has begun: new requests are refused from then on."""
        return self._drain is not None

    def drain(self) -> asyncio.Task[bool]:
        """Drain, once however often it is called: refuse new requests (``/readyz`` 503) and
        let queued and in-flight ones finish, for up to ``server.drain_timeout_s``. Returns
        the drain's task, whose result says whether everything finished in time."""
        if self._drain is None:
            self._scheduler.close_intake()
            queued, in_flight = self.backlog()
            log.info("draining: %d queued, %d in flight", queued, in_flight)
            self._drain = asyncio.ensure_future(self._wait_drained())
        return self._drain

    async def _wait_drained(self) -> bool:
        timeout = self.config.server.drain_timeout_s
        if await self._scheduler.wait_idle(timeout):
            return True
        log.warning("drain timed out after %.0f s; answering the rest 503", timeout)
        return False

    async def stop(self) -> None:
        """:meth:`drain` (if not begun already), answer what is left 503, stop the replicas."""
        await self.drain()
        self._scheduler.close()
        await self._pool.stop()

    # Requests

    def admit(self, timeout_ms: float | None) -> Admission:
        """Decide whether a request would be queued now (before its body is read).

        Raises:
            gre.batching.errors.ShuttingDown, gre.batching.errors.QueueFull: refused.
        """
        return self._scheduler.admit(timeout_ms)

    def submit(self, admission: Admission, image: bytes, top_k: int) -> Pending:
        """Queue an admitted request's image (see :meth:`Scheduler.submit`)."""
        return self._scheduler.submit(image, top_k, admission)

    async def result(self, pending: Pending) -> Completed:
        """Wait for ``pending``'s answer until its deadline.

        Raises:
            gre.batching.errors.DeadlineExceeded, ReplicaError, ShuttingDown: no answer.
        """
        return await self._scheduler.result(pending)

    def cancel(self, pending: Pending) -> None:
        """Drop ``pending`` (its client went away)."""
        self._scheduler.cancel(pending)

    def answer(self, completed: Completed) -> list[dict[str, Any]]:
        """GRE's response shape for a completed request (see :func:`gre.model.labels.answer`)."""
        assert isinstance(completed.outcome, Prediction)
        return answer(completed.outcome, self.model.labels)

    # What it tells

    def readiness(self) -> Readiness:
        """Whether it serves, and how many replicas are ready (``GET /readyz``)."""
        ready = not self.draining and self._pool.all_started and self._pool.ready_count > 0
        return Readiness(ready, self.draining, self._pool.ready_count, len(self._pool.slots))

    def backlog(self) -> tuple[int, int]:
        """Requests queued, and requests in a batch on a replica."""
        return len(self._scheduler.queue), self._scheduler.in_flight

    def summary(self) -> str:
        """One line for the start-up log: model, engine, devices, replicas, batching."""
        b = self.config.batching
        return (
            f"serving {self.model.name} ({self.config.model.deploy.name}, input "
            f"{'x'.join(map(str, self.model.net.input_shape))}) with the "
            f"{self.model.engine} engine; {len(self.plans)} replica(s) on "
            f"{', '.join(str(p.device) for p in self.plans)}; "
            f"max_batch_size {b.max_batch_size}, max_queue_delay_ms {b.max_queue_delay_ms}, "
            f"max_queue_size {b.max_queue_size}, timeout_ms {b.timeout_ms}"
        )

    def describe(self) -> dict[str, Any]:
        """What ``GET /api/model`` answers."""
        queued, in_flight = self.backlog()
        return {
            "name": self.model.name,
            "engine": self.model.engine,
            "deploy": str(self.config.model.deploy),
            "weights": str(self.config.model.weights),
            "input_shape": list(self.model.net.input_shape),
            "classes": self.num_classes,
            "devices": sorted({str(p.device) for p in self.plans}),
            "replicas": [
                {
                    "name": slot.name,
                    "state": slot.state.value,
                    "pid": slot.info.pid if slot.info and slot.state is SlotState.READY else None,
                    "device": slot.device,
                    "restarts": slot.restarts,
                }
                for slot in self._pool.slots
            ],
            "batching": self.config.batching.model_dump(),
            "queue": {"waiting": queued, "in_flight": in_flight},
            "batches_by_size": {
                str(size): count for size, count in sorted(self._scheduler.batch_sizes.items())
            },
        }
