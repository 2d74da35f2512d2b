"""The service: the model, its replicas and the scheduler, from start-up to drain."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gre.batchqueue import Pending
from gre.classifier import BatchResult, Prediction
from gre.config import Config
from gre.engines import resolve_engine_name
from gre.labels import answer, read_synset_words
from gre.metrics import GpuCollector, Metrics, ReplicaCollector
from gre.plan import ReplicaPlan, discover_and_plan
from gre.pool import ReplicaPool
from gre.preprocess import Preprocessor
from gre.prototxt import NetSpec, read_net_spec
from gre.replica import ReplicaError
from gre.scheduler import Completed, Scheduler
from gre.worker import Ready, ReplicaSpec

log = logging.getLogger("gre.service")


class StartupError(RuntimeError):
    """The model cannot be served as configured; the message says why."""


@dataclass(frozen=True)
class Model:
    """What the front end knows of the model before any replica starts."""

    name: str
    engine: str
    net: NetSpec
    labels: list[str] | None
    preprocessor: Preprocessor


def load_model(config: Config) -> Model:
    """Read the deploy prototxt, labels and mean, and check they fit together.

    Raises:
        StartupError: any of them unreadable or inconsistent (names the key and path).
    """
    model = config.model
    try:
        net = read_net_spec(model.deploy)
    except (OSError, ValueError) as exc:
        raise StartupError(f"model.deploy: {model.deploy}: {exc}") from exc
    labels = model.labels
    if model.synset_words is not None:
        try:
            labels = read_synset_words(model.synset_words)
        except (OSError, ValueError) as exc:
            raise StartupError(f"model.synset_words: {model.synset_words}: {exc}") from exc
    try:
        preprocessor = Preprocessor.build(config.preprocess, net.input_shape)
    except (OSError, ValueError) as exc:
        raise StartupError(f"preprocess: {exc}") from exc
    return Model(model.name, resolve_engine_name(model.engine), net, labels, preprocessor)


class Service:
    """Replicas + scheduler for one model.

    Construction validates the model (:func:`load_model`) and plans the replicas, raising
    :class:`StartupError` before any process starts. ``start()`` starts the replicas under a
    :class:`~gre.pool.ReplicaPool`; ``submit()`` queues a request; ``stop()`` drains.

    Attributes:
        on_fatal: called with the error when a replica cannot be started any more (the
            server then exits non-zero).
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.model = load_model(config)
        try:
            _, _, self.plans = discover_and_plan(config.replicas, self.model.engine)
        except ValueError as exc:
            raise StartupError(str(exc)) from exc
        self.scheduler = Scheduler(config.batching)
        self.num_classes: int | None = len(self.model.labels) if self.model.labels else None
        self.pool = ReplicaPool(
            [self._spec(plan) for plan in self.plans],
            self.scheduler,
            config.replicas,
            on_fatal=lambda error: self.on_fatal(error),
            on_ready=self._check_classes,
        )
        self.on_fatal: Callable[[str], None] = lambda error: None
        self.draining = False
        self.metrics = Metrics(config.batching.max_batch_size)
        self.metrics.queue_depth.set_function(lambda: len(self.scheduler.queue))
        self.metrics.registry.register(
            ReplicaCollector(self.pool.states, lambda: sum(s.restarts for s in self.pool.slots))
        )
        self.metrics.registry.register(GpuCollector())
        self.scheduler.on_batch = self._observe_batch

    def _observe_batch(self, replica: str, size: int, result: BatchResult) -> None:
        slot = next(s for s in self.pool.slots if s.name == replica)
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
            preprocessor=self.model.preprocessor,
            max_batch_size=self.config.batching.max_batch_size,
        )

    def _check_classes(self, info: Ready) -> None:
        if self.num_classes is None:
            self.num_classes = info.num_classes
        if info.num_classes != self.num_classes:
            raise ReplicaError(
                f"the net outputs {info.num_classes} classes but {self.num_classes} labels "
                "are configured (model.synset_words / model.labels)"
            )

    @property
    def ready(self) -> bool:
        """Serving: every replica has loaded its net and warmed up once, at least one is up
        now, and the service is not draining."""
        return not self.draining and self.pool.all_started and self.pool.ready_count > 0

    async def start(self) -> None:
        """Start the replicas and wait until each has loaded its net and run a warm-up batch.

        Raises:
            StartupError: a replica failed ``start_attempts`` times, or its class count
                disagrees with the labels.
        """
        self.pool.start()
        try:
            await self.pool.wait_started()
        except ReplicaError as exc:
            raise StartupError(str(exc)) from exc

    def submit(self, image: bytes, top_k: int, timeout_ms: float | None) -> Pending:
        """Queue a request (see :meth:`gre.scheduler.Scheduler.submit`)."""
        return self.scheduler.submit(image, top_k, timeout_ms)

    def answer(self, completed: Completed) -> list[dict[str, Any]]:
        """GRE's response shape for a completed request (see :func:`gre.labels.answer`)."""
        assert isinstance(completed.outcome, Prediction)
        return answer(completed.outcome, self.model.labels)

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
                    "state": slot.state,
                    "pid": slot.info.pid if slot.info and slot.state == "ready" else None,
                    "device": slot.device,
                    "restarts": slot.restarts,
                }
                for slot in self.pool.slots
            ],
            "batching": self.config.batching.model_dump(),
            "queue": {"waiting": len(self.scheduler.queue), "in_flight": self.scheduler.in_flight},
            "batches_by_size": {
                str(size): count for size, count in sorted(self.scheduler.batch_sizes.items())
            },
        }

    def begin_drain(self) -> None:
        """Turn ``/readyz`` 503 and refuse new requests; queued and in-flight ones go on."""
        self.draining = True
        self.scheduler.close_intake()

    async def stop(self) -> None:
        """Drain (up to ``server.drain_timeout_s``), then stop the replicas."""
        self.begin_drain()
        timeout = self.config.server.drain_timeout_s
        if not await self.scheduler.drain(timeout):
            log.warning("drain timed out after %.0f s; answering the rest 503", timeout)
        await self.scheduler.close()
        await self.pool.stop()
