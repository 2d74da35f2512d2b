"""Classify files without a server: :func:`build_classifier` loads the engine in this process
(the tests' and benchmarks' "engine called directly"); :func:`classify_files` runs files
through the replica pool (:mod:`gre.bulk`), as ``gre classify`` does."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gre.bulk.classify import api_answers
from gre.config import Config
from gre.messages import Device
from gre.model.classifier import Classifier
from gre.model.engines import EngineError, load_engine
from gre.model.loader import Model, ModelError, load_model
from gre.service import StartupError


def build_classifier(
    config: Config,
    model: Model | None = None,
    device: Device | None = None,
    threads: int | None = None,
) -> Classifier:
    """Load the configured engine in this process, on ``device`` (default: the CPU) with
    ``threads`` compute threads (default: ``replicas.cpu_threads``, else every core).

    Raises:
        StartupError: the model or engine cannot be loaded.
    """
    try:
        model = model or load_model(config)
        engine = load_engine(
            model.engine,
            config.model.deploy,
            config.model.weights,
            device or Device.cpu(),
            threads or config.replicas.cpu_threads or os.cpu_count() or 1,
            config.model.output_blob,
            len(model.labels or ()) or 1000,
            precision=config.model.precision,
        )
        return Classifier(
            engine,
            model.preprocessor,
            config.model.apply_softmax,
            config.replicas.decode_threads,
            decode=config.preprocess.decode,
        )
    except (ModelError, EngineError) as exc:
        raise StartupError(str(exc)) from exc


def classify_files(
    config: Config, paths: Sequence[Path], top_k: int
) -> tuple[dict[str, Any], bool]:
    """Classify ``paths`` on the replica pool, batched (:func:`gre.bulk.classify.api_answers`).

    Returns ``{path: [{"confidence", "label"}, ...] or {"error", "message"}}`` in input
    order and whether any image failed.

    Raises:
        StartupError: the model or engine cannot be loaded.
        gre.bulk.run.BulkError: the replicas failed for good during the run.
    """
    answers, summary = api_answers(config, [str(p) for p in paths], top_k)
    return answers, summary.errors > 0
