"""The executor side of :func:`gre.spark.udf.classify_udf`: gre's classifier in a Spark
Python worker, and what it answers for a batch of encoded images.

``predict_batch_udf`` calls :func:`make_predict_fn`'s closure once per Python worker process
and caches what it returns, so the model is loaded once per worker, on the GPU the task was
given (``TaskContext.resources()["gpu"]``, :func:`task_device`) or on the CPU. Untested on
a GPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gre.bulk.rows import outcome_row
from gre.config import AMI_NAMES, Config, load_config
from gre.messages import Device, ItemError, Outcome
from gre.model.classifier import Classifier
from gre.model.imaging import ImageError, check_image
from gre.model.loader import Model, ModelError, load_model
from gre.offline import build_classifier
from gre.service import StartupError

#: What the UDF answers for a batch: one dict per image, struct field -> value
#: (``predict_batch_udf``'s row-oriented form; see :func:`encode`).
Rows = list[dict[str, Any]]
#: The error field of a row that has none, as the UDF carries it (see :func:`encode`).
NO_ERROR = ""


@dataclass(frozen=True)
class ConfigSource:
    """A configuration to read again where it is used: the file, the ``--set`` overrides,
    and the driver's ``GRE_*`` (and Bitfusion AMI) environment variables, so an executor
    builds the same :class:`~gre.config.Config` while resolving ``package:`` paths against
    its own installed packages (a venv shipped with ``--archives`` lives elsewhere than the
    driver's)."""

    path: Path | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    environ: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def capture(cls, path: Path | None, overrides: Mapping[str, Any]) -> ConfigSource:
        """``path`` and ``overrides`` with this process's gre environment variables."""
        environ = {
            name: value
            for name, value in os.environ.items()
            if name.startswith("GRE_") or name in AMI_NAMES
        }
        return cls(path, dict(overrides), environ)

    def load(self) -> Config:
        """The configuration (:func:`gre.config.load_config`).

        Raises:
            gre.config.ConfigError: as :func:`~gre.config.load_config`.
        """
        return load_config(self.path, environ=self.environ, overrides=self.overrides)


def task_device() -> Device:
    """The device of the Spark task running now: the first GPU address Spark assigned it
    (``spark.task.resource.gpu.amount``), else the CPU (also outside a task).

    For a GPU, this process is narrowed to it (``CUDA_VISIBLE_DEVICES``) and the device is
    ``Device.gpu(0)``, as gre's replicas see theirs: the opencv and torch engines run on
    CUDA device 0. That holds only while CUDA is not yet initialised in this Python worker,
    and reads the address as CUDA numbers the GPUs here (as the ``nvidia-smi`` discovery
    script reports them).
    """
    from pyspark import TaskContext

    context = TaskContext.get()
    gpus = context.resources().get("gpu") if context is not None else None
    if gpus is None or not gpus.addresses:
        return Device.cpu()
    os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus.addresses[0])
    return Device.gpu(0)


def task_threads(config: Config) -> int:
    """Compute threads for a CPU classifier: ``replicas.cpu_threads`` when set, else the
    task's cores (``spark.task.cpus``), so concurrent tasks do not oversubscribe."""
    from pyspark import TaskContext

    context = TaskContext.get()
    return config.replicas.cpu_threads or (context.cpus() if context is not None else 0) or 1


def build_classifier_on(config: Config, model: Model, device: Device, threads: int) -> Classifier:
    """:func:`gre.offline.build_classifier` on ``device`` with ``threads`` compute threads.

    Raises:
        StartupError: the engine cannot be loaded on ``device``.
    """
    try:
        return build_classifier(config, model, device, threads)
    except StartupError as exc:
        raise StartupError(f"{device}: {exc}") from exc


def classify_batch(
    classifier: Classifier,
    images: Sequence[bytes | None],
    top_k: int,
    blobs: Sequence[str],
    max_pixels: int,
) -> list[Outcome]:
    """Each image's outcome, as ``gre classify`` answers a file: its header is checked
    (:func:`~gre.model.imaging.check_image`) and a refused one gets its error (a missing
    one, ``None``, is ``unreadable``); the rest go through one ``classifier.classify``.

    Raises:
        gre.model.engines.EngineError: the forward pass failed (the whole batch is lost).
    """
    outcomes: list[Outcome | None] = []
    todo: list[int] = []
    for i, data in enumerate(images):
        if data is None:
            outcomes.append(ItemError("unreadable", "the file has no content"))
            continue
        try:
            check_image(data, max_pixels)
        except ImageError as exc:
            outcomes.append(ItemError(exc.code, str(exc)))
            continue
        outcomes.append(None)
        todo.append(i)
    if todo:
        readable = [images[i] for i in todo]
        result = classifier.classify(
            readable,  # type: ignore[arg-type]  # None was kept out above
            [top_k] * len(todo),
            [tuple(blobs)] * len(todo) if blobs else (),
        )
        for i, outcome in zip(todo, result.outcomes, strict=True):
            outcomes[i] = outcome
    return [outcome for outcome in outcomes if outcome is not None]


def encode(outcome: Outcome, labels: list[str] | None, blobs: Sequence[str]) -> dict[str, Any]:
    """One image's struct as ``predict_batch_udf`` accepts it: every array a 1-D NumPy array
    and every string a string, since it checks the first row's values and nulls fail that
    check; so the row carries ``error`` :data:`NO_ERROR` (with an empty ``message``) and
    empty blobs where the Parquet row has nulls, which :func:`gre.spark.udf.classify_udf`
    puts back. Labels and confidences are :func:`gre.bulk.rows.outcome_row`'s; each blob is
    ``(D,) float32``."""
    row = outcome_row("", outcome, labels, ())
    encoded: dict[str, Any] = {
        "labels": np.array(row["labels"], dtype=object),
        "confidences": np.array(row["confidences"], dtype=np.float64),
        "error": row["error"] or NO_ERROR,
        "message": row["message"] or "",
    }
    empty: npt.NDArray[np.float32] = np.empty(0, np.float32)
    for name in blobs:
        encoded[name] = empty if isinstance(outcome, ItemError) else outcome.features[name]
    return encoded


def make_predict_fn(
    source: Config | ConfigSource, top_k: int, blobs: Sequence[str]
) -> Callable[[], Callable[[npt.NDArray[np.object_]], Rows]]:
    """``predict_batch_udf``'s ``make_predict_fn``: a picklable function that, in a Python
    worker, loads the model on :func:`task_device` and returns the function classifying a
    batch: an ``(N,) object`` array of encoded images (``bytes``) in, ``N`` rows
    (:func:`encode`) out.

    The returned functions raise :class:`~gre.service.StartupError` (the model or engine
    cannot be loaded: the task fails) and :class:`~gre.model.engines.EngineError` (a forward
    failed; Spark retries the task).
    """
    names = tuple(blobs)

    def make() -> Callable[[npt.NDArray[np.object_]], Rows]:
        config = source.load() if isinstance(source, ConfigSource) else source
        try:
            model = load_model(config)
        except ModelError as exc:
            raise StartupError(str(exc)) from exc
        classifier = build_classifier_on(config, model, task_device(), task_threads(config))
        max_pixels = config.server.max_pixels

        def predict(images: npt.NDArray[np.object_]) -> Rows:
            outcomes = classify_batch(classifier, list(images), top_k, names, max_pixels)
            return [encode(outcome, model.labels, names) for outcome in outcomes]

        return predict

    return make
