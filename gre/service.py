"""The service: one model at a time, its replicas and the scheduler, from start-up through
reloads to drain.

:class:`Service` is the façade the HTTP layer uses, and the only one: admit, submit, result,
cancel, reload, drain, readiness, describe. The scheduler and the replica pools behind it are
its own. Each model load is a :class:`Generation`; a reload starts the next beside the one
serving, switches to it once warm and retires the old one, all on the one queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from gre.batching.errors import ReplicaStartError
from gre.batching.queue import Pending
from gre.batching.scheduler import Admission, Completed, Scheduler
from gre.config import Config, ConfigError
from gre.heap import freeze_startup_objects
from gre.messages import BatchResult, Prediction, Ready, ReplicaSpec
from gre.metrics import GpuCollector, Metrics, ReplicaCollector
from gre.model.engines.choice import decode_problem
from gre.model.labels import AnswerEncoder, answer
from gre.model.loader import Model, ModelError, load_model
from gre.model.version import ModelVersion, model_version
from gre.replicas.plan import PlanError, ReplicaPlan, discover_and_plan
from gre.replicas.pool import ReplicaHandle, ReplicaPool, Slot, SlotState
from gre.replicas.replica import Replica

log = logging.getLogger("gre.service")


class StartupError(RuntimeError):
    """The model cannot be served as configured: its files (:class:`ModelError`), the
    devices (:class:`PlanError`), or replicas that fail to start; the message says why."""


class ReloadError(RuntimeError):
    """A reload that did not happen; the old model keeps serving."""


class ReloadInProgress(ReloadError):
    """Another reload is under way."""


class ReloadFailed(ReloadError):
    """The new config or model could not be loaded or started; the message says why."""


@dataclass(frozen=True)
class Readiness:
    """``GET /readyz``'s facts: ``ready`` (every replica warmed up once, one up now, not
    draining), ``draining``, and the replicas ready now out of ``replicas_total``."""

    ready: bool
    draining: bool
    replicas_ready: int
    replicas_total: int


@dataclass(eq=False)
class Generation:
    """One loaded model and the replicas serving it: number 1 at start-up, +1 per reload.

    ``config`` is the configuration it was loaded from (``[server]`` and ``[batching]``
    always those of start-up); ``num_classes`` is the labels' count, or the net's once a
    replica has reported it.
    """

    number: int
    config: Config
    model: Model
    plans: list[ReplicaPlan]
    specs: list[ReplicaSpec]
    version: ModelVersion
    num_classes: int | None
    pool: ReplicaPool = field(init=False)
    #: One image's shape of each blob, as the first replica to warm up reported it.
    blob_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def describe_version(self) -> dict[str, Any]:
        """``{"digest", "loaded_at", "generation"}``: ``/api/model``'s and the reload's
        answer's ``version``."""
        version = self.version
        return {
            "digest": version.digest,
            "loaded_at": version.loaded_at_iso,
            "generation": self.number,
        }


class Service:
    """Replicas + scheduler for one model at a time.

    Construction validates the model (:func:`gre.model.loader.load_model`) and plans the
    replicas, raising :class:`StartupError` before any process starts. :meth:`start` starts
    the replicas; :meth:`admit`, :meth:`submit` and :meth:`result` serve a request;
    :meth:`reload` swaps the model under load; :meth:`drain` then :meth:`stop` end it.

    Args:
        config: the whole configuration.
        replica: makes the handle of each replica slot (default: a replica process; tests of
            the HTTP layer pass a fake).
        reload_config: re-reads the configuration for :meth:`reload` (raising
            :class:`gre.config.ConfigError`); default: ``config`` again.

    Attributes:
        on_fatal: called with the error when a replica cannot be started any more (the
            server then exits non-zero).
    """

    def __init__(
        self,
        config: Config,
        replica: Callable[[ReplicaSpec], ReplicaHandle] = Replica,
        reload_config: Callable[[], Config] | None = None,
    ) -> None:
        self._start_config = config
        self._new_replica = replica
        self._reload_config = reload_config or (lambda: config)
        self._scheduler = Scheduler(config.batching)
        self.on_fatal: Callable[[str], None] = lambda error: None
        self._drain: asyncio.Task[bool] | None = None
        self._stopped = asyncio.Event()  # set by stop(): a reload in progress gives up
        #: Every replica slot of every generation, by name (names never repeat).
        self._slots: dict[str, Slot] = {}
        #: By replica name: its generation's labels, and their answers' encoder.
        self._encoders: dict[str, AnswerEncoder] = {}
        self._current = self._load(config, 1)
        self._next: Generation | None = None  # being started by a reload
        self._retiring: list[Generation] = []
        self._retired_restarts = 0
        self.last_reload_error: str | None = None
        self.metrics = Metrics(config.batching.max_batch_size)
        self.metrics.queue_depth.set_function(lambda: len(self._scheduler.queue))
        self.metrics.registry.register(ReplicaCollector(self._states, self._restarts))
        self.metrics.registry.register(GpuCollector())
        self._show_version(None, self._current)
        self._scheduler.on_batch = self._observe_batch

    # The model serving now

    @property
    def config(self) -> Config:
        """The configuration serving now (its ``[server]`` and ``[batching]`` are always
        those of start-up)."""
        return self._current.config

    @property
    def model(self) -> Model:
        """The model serving now."""
        return self._current.model

    @property
    def num_classes(self) -> int | None:
        """The class count of the model serving now (``None`` until known)."""
        return self._current.num_classes

    @property
    def specs(self) -> list[ReplicaSpec]:
        """What each replica slot of the model serving now runs, in slot order."""
        return self._current.specs

    @property
    def plans(self) -> list[ReplicaPlan]:
        """Where the replicas of the model serving now run."""
        return self._current.plans

    @property
    def version(self) -> ModelVersion:
        """The version of the model serving now."""
        return self._current.version

    def _load(self, config: Config, number: int) -> Generation:
        """Validate, plan and build (not start) generation ``number`` for ``config``.

        Raises:
            StartupError: the model's files, the devices, or the files' digest.
        """
        try:
            model = load_model(config)
            placement = discover_and_plan(config.replicas, config.model.engine)
            model, plans = replace(model, engine=placement.engine), placement.plans
            version = model_version(config.model.deploy, config.model.weights)
        except (ModelError, PlanError, OSError) as exc:
            raise StartupError(str(exc)) from exc
        problem = decode_problem(config.preprocess.decode, placement.engine)
        if problem:
            raise StartupError(problem)
        specs = [self._spec(config, model, plan, number) for plan in plans]
        num_classes = len(model.labels) if model.labels else None
        generation = Generation(number, config, model, plans, specs, version, num_classes)
        generation.pool = ReplicaPool(
            specs,
            self._scheduler,
            config.replicas,
            on_fatal=lambda error: self._fatal(generation, error),
            on_ready=lambda info: self._check_classes(generation, info),
            replica=self._new_replica,
        )
        encoder = AnswerEncoder(model.labels)
        for slot in generation.pool.slots:
            self._slots[slot.name] = slot
            self._encoders[slot.name] = encoder
        return generation

    def _fatal(self, generation: Generation, error: str) -> None:
        # A reload's replicas that cannot start fail the reload (wait_started), not gre.
        if generation is self._current:
            self.on_fatal(error)

    def _states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for generation in self._generations():
            for state, count in generation.pool.states().items():
                counts[state] = counts.get(state, 0) + count
        return counts

    def _restarts(self) -> int:
        return self._retired_restarts + sum(g.pool.restarts for g in self._generations())

    def _generations(self) -> list[Generation]:
        """The generation serving, the one a reload is starting, and those retiring."""
        return [self._current, *([self._next] if self._next else []), *self._retiring]

    def _observe_batch(self, replica: str, size: int, result: BatchResult) -> None:
        self.metrics.observe_batch(
            replica, self._slots[replica].device, size, result.preprocess_ms / 1e3,
            result.inference_ms / 1e3,
        )  # fmt: skip

    def _show_version(self, old: Generation | None, new: Generation) -> None:
        if old is not None:
            self.metrics.model_info.remove(old.model.name, old.version.label)
        self.metrics.model_info.labels(new.model.name, new.version.label).set(1)

    def _spec(self, config: Config, model: Model, plan: ReplicaPlan, number: int) -> ReplicaSpec:
        return ReplicaSpec(
            index=plan.index,
            engine=model.engine,
            deploy=config.model.deploy,
            weights=config.model.weights,
            output_blob=config.model.output_blob,
            apply_softmax=config.model.apply_softmax,
            num_classes=len(model.labels or ()) or 1000,
            device=plan.device,
            threads=plan.threads,
            decode_threads=plan.decode_threads,
            input_shape=model.net.input_shape,
            preprocess=config.preprocess.model_dump(),
            max_batch_size=config.batching.max_batch_size,
            max_batch_bytes=config.batching.max_batch_bytes,
            generation=number,
            precision=config.model.precision,
        )

    @staticmethod
    def _check_classes(generation: Generation, info: Ready) -> None:
        if not generation.blob_shapes:
            generation.blob_shapes = dict(info.blobs)
        if generation.num_classes is None:
            generation.num_classes = info.num_classes
        if info.num_classes != generation.num_classes:
            raise ReplicaStartError(
                f"the net outputs {info.num_classes} classes but {generation.num_classes} "
                "labels are configured (model.synset_words / model.labels)"
            )

    # Life cycle

    async def start(self) -> None:
        """Start the replicas and wait until each has loaded its net and run a warm-up batch.

        Raises:
            StartupError: a replica failed ``start_attempts`` times, or its class count
                disagrees with the labels.
        """
        pool = self._current.pool
        pool.start()
        try:
            await pool.wait_started()
        except ReplicaStartError as exc:
            raise StartupError(str(exc)) from exc

    @property
    def reloading(self) -> bool:
        """Whether a :meth:`reload` is under way."""
        return self._next is not None

    async def reload(self) -> Generation:
        """Swap the model without dropping a request: re-read the configuration, start the
        new model's replicas beside the old ones and warm them up; then new batches go to
        them only, the old replicas finish the batches they hold and stop. Queued requests
        stay queued throughout. ``[server]`` and ``[batching]`` keep their start-up values
        (a change there is logged and needs a restart). Returns the new generation.

        Raises:
            ReloadInProgress: another reload is under way.
            ReloadFailed: the configuration, the model or its replicas failed (the old model
                serves on), or the service is still starting or already draining.
        """
        if self._next is not None:
            raise ReloadInProgress("a reload is already under way")
        try:
            return await self._reload()
        except ReloadFailed as exc:
            self.last_reload_error = str(exc)
            self.metrics.reloads.labels("failed").inc()
            log.error("reload failed, the old model serves on: %s", exc)
            raise

    async def _reload(self) -> Generation:
        if self.draining:
            raise ReloadFailed("the service is draining")
        if not self._current.pool.all_started:
            raise ReloadFailed("the service is still starting its replicas")
        log.info("reloading: re-reading the configuration")
        try:
            config = self._keep_fixed(self._reload_config())
            generation = self._load(config, self._current.number + 1)
        except (ConfigError, StartupError) as exc:
            raise ReloadFailed(str(exc)) from exc
        self._next = generation
        try:
            generation.pool.start()
            await self._wait_started_unless_stopped(generation)
            if self.draining:
                raise ReloadFailed("the service began draining during the reload")
        except BaseException:
            await generation.pool.stop()
            raise
        finally:
            self._next = None
        old, self._current = self._current, generation
        self._retiring.append(old)
        self._show_version(old, generation)
        log.info("reloaded: %s; retiring the old replicas", self.summary())
        try:
            await old.pool.retire()
        finally:
            self._retiring.remove(old)
            self._retired_restarts += old.pool.restarts
        self.last_reload_error = None
        self.metrics.reloads.labels("ok").inc()
        freeze_startup_objects("front end")  # the new model's objects live as long
        return generation

    async def _wait_started_unless_stopped(self, generation: Generation) -> None:
        """Wait for ``generation``'s replicas to warm up, or for :meth:`stop`, which stops
        them (and would otherwise leave the reload waiting for ever).

        Raises:
            ReloadFailed: a replica failed to start, or the service stopped first.
        """
        started = asyncio.ensure_future(generation.pool.wait_started())
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({started, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not started.done():
                raise ReloadFailed("the service stopped during the reload")
            started.result()
        except ReplicaStartError as exc:
            raise ReloadFailed(str(exc)) from exc
        finally:
            started.cancel()
            stopped.cancel()

    def _keep_fixed(self, config: Config) -> Config:
        """``config`` with start-up's ``[server]`` and ``[batching]``: the listening socket,
        the queue and the metrics' buckets stay as they are."""
        start = self._start_config
        changed = [
            name for name in ("server", "batching") if getattr(config, name) != getattr(start, name)
        ]
        if changed:
            log.warning(
                "reload: changes to %s take effect at the next restart",
                " and ".join(f"[{name}]" for name in changed),
            )
        return config.model_copy(update={"server": start.server, "batching": start.batching})

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
        """:meth:`drain` (if not begun already), answer what is left 503, stop the replicas
        of every generation."""
        await self.drain()
        self._stopped.set()
        self._scheduler.close()
        await asyncio.gather(*(g.pool.stop() for g in self._generations()))

    # Requests

    def admit(self, timeout_ms: float | None) -> Admission:
        """Decide whether a request would be queued now (before its body is read).

        Raises:
            gre.batching.errors.ShuttingDown, gre.batching.errors.QueueFull: refused.
        """
        return self._scheduler.admit(timeout_ms)

    def submit(
        self, admission: Admission, image: bytes, top_k: int, blobs: tuple[str, ...] = ()
    ) -> Pending:
        """Queue an admitted request's image (see :meth:`Scheduler.submit`); ``blobs``: the
        blobs to return with its top ``top_k``."""
        return self._scheduler.submit(image, top_k, admission, blobs)

    async def result(self, pending: Pending) -> Completed:
        """Wait for ``pending``'s answer until its deadline.

        Raises:
            gre.batching.errors.DeadlineExceeded, ReplicaError, ShuttingDown: no answer.
        """
        return await self._scheduler.result(pending)

    def watch(
        self, pending: Pending, callback: Callable[[asyncio.Future[Completed]], None]
    ) -> None:
        """:meth:`result` by callback: ``callback(future)`` once ``pending`` is answered,
        failed or cancelled (see :meth:`gre.batching.scheduler.Scheduler.watch`)."""
        self._scheduler.watch(pending, callback)

    def cancel(self, pending: Pending) -> None:
        """Drop ``pending`` (its client went away)."""
        self._scheduler.cancel(pending)

    def answer(self, completed: Completed) -> list[dict[str, Any]]:
        """GRE's response shape for a completed request (see :func:`gre.model.labels.answer`)."""
        assert isinstance(completed.outcome, Prediction)
        return answer(completed.outcome, self.answer_encoder(completed).labels)

    def answer_json(self, completed: Completed) -> bytes:
        """:meth:`answer`, encoded as its JSON response body (UTF-8 bytes).

        Raises:
            ValueError: a confidence is not finite (no JSON for it).
        """
        assert isinstance(completed.outcome, Prediction)
        return self.answer_encoder(completed).encode(completed.outcome)

    def answer_encoder(self, completed: Completed) -> AnswerEncoder:
        """The JSON encoder of the labels of the model that answered ``completed`` (one per
        model load: during a reload both models answer)."""
        return self._encoders[completed.replica]

    def features(self, completed: Completed) -> dict[str, list[float]]:
        """``/api/features``' answer: each blob asked for, flattened (C, H, W), as floats."""
        assert isinstance(completed.outcome, Prediction)
        return {name: value.tolist() for name, value in completed.outcome.features.items()}

    # What it tells

    @property
    def blob_names(self) -> tuple[str, ...]:
        """Every blob of the serving model's TEST net, input first (its deploy prototxt)."""
        return self.model.net.blob_names

    def describe_blobs(self) -> list[dict[str, Any]]:
        """``/api/model``'s ``blobs``: each blob's ``name`` and one image's ``shape``
        (``None`` until a replica has reported it)."""
        shapes = self._current.blob_shapes
        return [
            {"name": name, "shape": list(shapes[name]) if name in shapes else None}
            for name in self.blob_names
        ]

    def readiness(self) -> Readiness:
        """Whether it serves, and how many replicas are ready (``GET /readyz``)."""
        pool = self._current.pool
        ready = not self.draining and pool.all_started and pool.ready_count > 0
        return Readiness(ready, self.draining, pool.ready_count, len(pool.slots))

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
            f"max_batch_size {b.max_batch_size}, max_batch_bytes {b.max_batch_bytes}, "
            f"max_queue_delay_ms {b.max_queue_delay_ms}, "
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
            "version": self._current.describe_version(),
            "reload": {"in_progress": self.reloading, "last_error": self.last_reload_error},
            "input_shape": list(self.model.net.input_shape),
            "classes": self.num_classes,
            "blobs": self.describe_blobs(),
            "devices": sorted({str(p.device) for p in self.plans}),
            "replicas": [
                {
                    "name": slot.name,
                    "state": slot.state.value,
                    "pid": slot.info.pid if slot.info and slot.state is SlotState.READY else None,
                    "device": slot.device,
                    "restarts": slot.restarts,
                }
                for slot in self._current.pool.slots
            ],
            "batching": self.config.batching.model_dump(),
            "queue": {"waiting": queued, "in_flight": in_flight},
            "batches_by_size": {
                str(size): count for size, count in sorted(self._scheduler.batch_sizes.items())
            },
        }
