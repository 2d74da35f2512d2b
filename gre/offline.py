"""Classify files in this process, with the same pipeline a replica runs (``gre classify``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gre.config import Config
from gre.messages import Device, ItemError, Prediction
from gre.model.classifier import Classifier
from gre.model.engines import EngineError, load_engine
from gre.model.imaging import ImageError, check_image
from gre.model.labels import answer
from gre.model.loader import Model, ModelError, load_model
from gre.service import StartupError


def build_classifier(config: Config, model: Model | None = None) -> Classifier:
    """Load the configured engine on the CPU, in this process.

    Raises:
        StartupError: the model or engine cannot be loaded.
    """
    try:
        model = model or load_model(config)
        engine = load_engine(
            model.engine,
            config.model.deploy,
            config.model.weights,
            Device.cpu(),
            config.replicas.cpu_threads or os.cpu_count() or 1,
            config.model.output_blob,
            len(model.labels or ()) or 1000,
            precision=config.model.precision,
        )
    except (ModelError, EngineError) as exc:
        raise StartupError(str(exc)) from exc
    return Classifier(
        engine, model.preprocessor, config.model.apply_softmax, config.replicas.decode_threads
    )


def classify_files(
    config: Config, paths: Sequence[Path], top_k: int
) -> tuple[dict[str, Any], bool]:
    """Classify ``paths`` as one batch.

    Returns ``{path: [{"confidence", "label"}, ...] or {"error", "message"}}`` and whether
    any image failed.

    Raises:
        StartupError: the model or engine cannot be loaded.
    """
    try:
        model = load_model(config)
    except ModelError as exc:
        raise StartupError(str(exc)) from exc
    classifier = build_classifier(config, model)
    labels = model.labels
    answers: dict[str, Any] = {}
    readable: list[tuple[str, bytes]] = []
    for path in paths:
        try:
            data = path.read_bytes()
            check_image(data, config.server.max_pixels)
            readable.append((str(path), data))
        except OSError as exc:
            answers[str(path)] = {"error": "unreadable", "message": str(exc)}
        except ImageError as exc:
            answers[str(path)] = {"error": exc.code, "message": str(exc)}
    try:
        if readable:
            result = classifier.classify([d for _, d in readable], [top_k] * len(readable))
            for (name, _), outcome in zip(readable, result.outcomes, strict=True):
                answers[name] = _answer(outcome, labels)
    finally:
        classifier.close()
    ordered = {str(p): answers[str(p)] for p in paths}
    return ordered, any(isinstance(a, dict) for a in ordered.values())


def _answer(outcome: Prediction | ItemError, labels: list[str] | None) -> Any:
    if isinstance(outcome, ItemError):
        return {"error": outcome.code, "message": outcome.message}
    return answer(outcome, labels)
