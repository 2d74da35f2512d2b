"""The service: the model, its replicas and the scheduler, from start-up to drain."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from gre.classifier import Prediction
from gre.config import Config
from gre.engines import resolve_engine_name
from gre.gpus import discover_gpus
from gre.labels import read_synset_words
from gre.plan import ReplicaPlan, plan_replicas
from gre.preprocess import Preprocessor
from gre.prototxt import NetSpec, read_net_spec
from gre.replica import Replica, ReplicaError
from gre.scheduler import Completed, Scheduler
from gre.worker import ReplicaSpec

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

    ``start()`` spawns the replicas; ``classify()`` queues a request; ``stop()`` drains.
    Construction validates the model (:func:`load_model`) and plans replicas, raising
    :class:`StartupError` before any process is started.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.model = load_model(config)
        gpus, nvml_problem = discover_gpus()
        try:
            self.plans: list[ReplicaPlan] = plan_replicas(
                config.replicas, gpus, nvml_problem, self.model.engine
            )
        except ValueError as exc:
            raise StartupError(str(exc)) from exc
        self.scheduler = Scheduler(config.batching)
        self.replicas = [Replica(self._spec(plan)) for plan in self.plans]
        self.num_classes: int | None = len(self.model.labels) if self.model.labels else None
        self.draining = False

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
        )

    @property
    def ready(self) -> bool:
        """Every replica has loaded its net and run a warm-up batch, and not draining."""
        return not self.draining and all(r.info is not None for r in self.replicas)

    async def start(self, timeout_s: float = 300.0) -> None:
        """Start every replica concurrently and begin dispatching to each as it is ready.

        Raises:
            StartupError: a replica failed to start, or its class count disagrees with the
                labels.
        """

        async def start_one(replica: Replica) -> None:
            info = await replica.start(timeout_s)
            if self.num_classes is None:
                self.num_classes = info.num_classes
            if info.num_classes != self.num_classes:
                raise StartupError(
                    f"the net outputs {info.num_classes} classes but {self.num_classes} labels "
                    "are configured (model.synset_words / model.labels)"
                )
            log.info(
                "replica %s ready: pid %d, engine %s on %s",
                replica.name, info.pid, info.engine, info.device,
            )  # fmt: skip
            self.scheduler.serve(replica)

        try:
            await asyncio.gather(*(start_one(r) for r in self.replicas))
        except ReplicaError as exc:
            raise StartupError(str(exc)) from exc

    def submit(self, image: bytes, top_k: int, timeout_ms: float | None) -> Any:
        """Queue a request (see :meth:`gre.scheduler.Scheduler.submit`)."""
        return self.scheduler.submit(image, top_k, timeout_ms)

    def label(self, index: int) -> str:
        """The label of class ``index`` (its number when no labels are configured)."""
        labels = self.model.labels
        return labels[index] if labels and index < len(labels) else str(index)

    def answer(self, completed: Completed) -> list[dict[str, Any]]:
        """GRE's response shape: ``[{"confidence": p, "label": "..."}, ...]``, best first."""
        prediction = completed.outcome
        assert isinstance(prediction, Prediction)
        return [
            {"confidence": confidence, "label": self.label(index)}
            for index, confidence in zip(prediction.indices, prediction.confidences, strict=True)
        ]

    def describe(self) -> dict[str, Any]:
        """What ``GET /api/model`` answers."""
        batching = self.config.batching
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
                    "name": r.name,
                    "ready": r.info is not None,
                    "device": r.info.device if r.info else str(r.spec.device),
                }
                for r in self.replicas
            ],
            "batching": batching.model_dump(),
            "batches_by_size": {
                str(size): count for size, count in sorted(self.scheduler.batch_sizes.items())
            },
        }

    async def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Refuse new requests, finish queued and in-flight ones, then stop the replicas."""
        self.draining = True
        self.scheduler.close_intake()
        if not await self.scheduler.drain(drain_timeout_s):
            log.warning("drain timed out after %.0f s", drain_timeout_s)
        await self.scheduler.close()
        await asyncio.gather(*(r.stop() for r in self.replicas))
