"""One sweep end to end: ceiling, steps, then CSV, JSON and PNGs in a directory."""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

import uvloop

from benchmarks.ceiling import measure_ceiling
from benchmarks.corpus import Corpus
from benchmarks.machine import (
    HARNESS_PACKAGES,
    command_line,
    debian_version,
    machine,
    package_versions,
)
from benchmarks.plots import batch_size_vs_load, latency_vs_throughput
from benchmarks.results import RunResult, write_run
from benchmarks.sweep import SweepSpec, run_sweep

#: Seconds the client's ceiling is measured for.
CEILING_S = 2.0


def now() -> str:
    """ISO 8601 UTC, seconds."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def client_ceiling(spec: SweepSpec, corpus: Corpus) -> float:
    """The client's req/s against a trivial endpoint at the sweep's highest concurrency
    (open loop: 64 connections)."""
    concurrency = int(max(spec.loads)) if spec.mode == "closed" else 64
    return uvloop.run(
        measure_ceiling(spec.client, corpus.images, corpus.paths[0], concurrency, CEILING_S)
    )


def write_outputs(run: RunResult, directory: Path) -> list[Path]:
    """steps.csv, run.json, latency_vs_throughput.png, and batch_size_vs_load.png where the
    server reports batch sizes."""
    paths = list(write_run(run, directory))
    paths.append(
        latency_vs_throughput(
            {run.name: run.steps},
            directory / "latency_vs_throughput.png",
            f"{run.name}: latency vs throughput ({run.mode} loop)",
        )
    )
    batch = batch_size_vs_load(
        {run.name: run.steps},
        directory / "batch_size_vs_load.png",
        f"{run.name}: batch size vs load ({run.mode} loop)",
    )
    if batch is not None:
        paths.append(batch)
    return paths


def sweep(
    name: str,
    spec: SweepSpec,
    corpus: Corpus,
    directory: Path | None,
    ceiling: float | None,
    versions: dict[str, str] | None = None,
) -> RunResult:
    """Run ``spec``'s steps against its URL and, unless ``directory`` is ``None``, write the
    outputs there. ``ceiling`` is the client's (see :func:`client_ceiling`)."""
    started = now()
    steps = uvloop.run(run_sweep(spec, corpus, ceiling, f"{name}: {spec.mode} loop, {spec.url}"))
    run = RunResult(
        name=name,
        url=spec.url,
        mode=spec.mode,
        client=spec.client,
        corpus=corpus.description,
        command=command_line(),
        started_at=started,
        settings={
            **dataclasses.asdict(spec.settings),
            "poisson": spec.poisson,
            "max_connections": spec.max_connections,
            "loads": list(spec.loads),
        },
        machine=machine(),
        versions={
            **package_versions(HARNESS_PACKAGES),
            "hey": debian_version("hey"),
            **(versions or {}),
        },
        ceiling=ceiling,
        steps=steps,
    )
    if directory is not None:
        write_outputs(run, directory)
    return run
