"""gre against its peers: the same model, the same load, one run, one after another.

For every server (gre first, then each peer), started alone on this machine:

1. closed loop with the real engine over the concurrencies: saturation throughput (the best
   step) and latency vs throughput;
2. open loop at three fixed request rates, the same for every server (by default 25, 50 and
   75 % of the *lowest* saturation throughput, so that every server can sustain them):
   p50/p99 at equal rate;
3. closed loop with the ``null`` engine (no forward): what the service itself costs.

Every run is written under ``<results>/<name>/<server>-<phase>/`` (CSV, JSON, PNG), the
whole as ``<results>/<name>/comparison.json``, and the report as ``<results>/<name>.md``.
"""

from __future__ import annotations

import json
import shlex
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.corpus import Corpus
from benchmarks.machine import (
    HARNESS_PACKAGES,
    command_line,
    debian_version,
    machine,
    package_versions,
)
from benchmarks.results import RunResult, StepResult
from benchmarks.runner import now, sweep
from benchmarks.servers import (
    GRE_BENCH_SETTINGS,
    free_port,
    gre_command,
    running_server,
    server_versions,
)
from benchmarks.steady import Settings
from benchmarks.sweep import SweepSpec

PHASES = ("closed", "open", "null")
#: Fractions of the lowest saturation throughput used as the fixed rates.
RATE_FRACTIONS = (0.25, 0.5, 0.75)


@dataclass
class Comparison:
    """Everything a comparison measured; ``runs[server][phase]`` (phases :data:`PHASES`);
    ``failures[server][phase]`` says why a run is missing."""

    name: str
    engine: str
    servers: list[str]
    rates: list[float]
    ceiling: float | None
    command: str
    started_at: str
    corpus: str
    machine: dict[str, Any]
    harness_versions: dict[str, str]
    server_versions: dict[str, dict[str, str]]
    server_commands: dict[str, str]
    settings: dict[str, Any]
    runs: dict[str, dict[str, RunResult]] = field(default_factory=dict)
    failures: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["runs"] = {
            server: {phase: run.to_json() for phase, run in runs.items()}
            for server, runs in self.runs.items()
        }
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Comparison:
        runs = {
            server: {phase: RunResult.from_json(run) for phase, run in phases.items()}
            for server, phases in data.get("runs", {}).items()
        }
        return cls(**{**data, "runs": runs})

    def run(self, server: str, phase: str) -> RunResult | None:
        return self.runs.get(server, {}).get(phase)


def saturation(steps: Sequence[StepResult]) -> StepResult | None:
    """The step with the highest throughput (``None`` without steps)."""
    return max(steps, key=lambda s: s.throughput, default=None)


def fixed_rates(comparison: Comparison, fractions: Sequence[float] = RATE_FRACTIONS) -> list[float]:
    """``fractions`` of the lowest saturation throughput among the servers' closed loops,
    rounded to whole req/s (at least 1).

    Raises:
        RuntimeError: no server has a closed-loop run with a successful answer.
    """
    best = [
        step.throughput
        for server in comparison.servers
        if (run := comparison.run(server, "closed")) and (step := saturation(run.steps))
        if step.throughput > 0
    ]
    if not best:
        raise RuntimeError("no server answered in the closed loop: no rates to compare at")
    return [max(1.0, float(round(fraction * min(best)))) for fraction in fractions]


@dataclass(frozen=True)
class CompareSpec:
    """The load of a comparison (concurrencies, rates or ``None`` to derive them, the null
    engine's concurrencies) and how each step is measured."""

    concurrencies: Sequence[int] = (1, 2, 4, 8, 16, 32, 64)
    rates: Sequence[float] | None = None
    null_concurrencies: Sequence[int] = (1, 4, 16, 64)
    poisson: bool = True
    settings: Settings = field(default_factory=Settings)
    gre_args: Sequence[str] = ()
    gre_settings: Sequence[str] = GRE_BENCH_SETTINGS


def server_command(server: str, engine: str, spec: CompareSpec) -> str:
    """How ``server`` is started (the null phase swaps the engine for ``null``)."""
    if server == "gre":
        return shlex.join(gre_command(8000, engine, spec.gre_args, spec.gre_settings))
    return f"benchmarks.peers.running_peer({server!r}, port=PORT, engine={engine!r})"


def run_phase(
    comparison: Comparison,
    server: str,
    phase: str,
    spec: CompareSpec,
    corpus: Corpus,
    results: Path,
    log: Callable[[str], None],
) -> None:
    """Start ``server`` for ``phase``, sweep it, stop it; a failure is recorded, not raised."""
    engine = "null" if phase == "null" else comparison.engine
    mode = "open" if phase == "open" else "closed"
    loads: Sequence[float] = {
        "closed": spec.concurrencies,
        "open": comparison.rates,
        "null": spec.null_concurrencies,
    }[phase]
    port = free_port()
    try:
        manager = running_server(
            server,
            port=port,
            engine=engine,
            gre_args=spec.gre_args,
            gre_settings=spec.gre_settings,
        )
        with manager as base:
            sweep_spec = SweepSpec(
                f"{base}/api/classify", mode, loads, poisson=spec.poisson, settings=spec.settings
            )
            name = f"{server}-{phase}"
            run = sweep(
                name,
                sweep_spec,
                corpus,
                results / comparison.name / name,
                comparison.ceiling,
                comparison.server_versions.get(server),
            )
        comparison.runs.setdefault(server, {})[phase] = run
    except Exception as exc:  # one server failing must not lose the others' figures
        comparison.failures.setdefault(server, {})[phase] = f"{type(exc).__name__}: {exc}"
        log(f"{server} {phase}: FAILED: {exc}\n{traceback.format_exc(limit=3)}")


def compare(
    name: str,
    servers: Sequence[str],
    engine: str,
    spec: CompareSpec,
    corpus: Corpus,
    ceiling: float | None,
    results: Path,
    log: Callable[[str], None] = print,
) -> Comparison:
    """Run every phase for every server; write ``comparison.json`` (after each phase, so an
    interrupted run keeps what it measured). Returns the comparison (see :mod:`report`)."""
    comparison = Comparison(
        name=name,
        engine=engine,
        servers=list(servers),
        rates=list(spec.rates or []),
        ceiling=ceiling,
        command=command_line(),
        started_at=now(),
        corpus=corpus.description,
        machine=machine(),
        harness_versions={**package_versions(HARNESS_PACKAGES), "hey": debian_version("hey")},
        server_versions={server: server_versions(server) for server in servers},
        server_commands={server: server_command(server, engine, spec) for server in servers},
        settings={
            **asdict(spec.settings),
            "concurrencies": list(spec.concurrencies),
            "null_concurrencies": list(spec.null_concurrencies),
            "arrivals": "poisson" if spec.poisson else "constant",
        },
    )
    directory = results / name
    directory.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        (directory / "comparison.json").write_text(
            json.dumps(comparison.to_json(), indent=2) + "\n"
        )

    for server in servers:
        run_phase(comparison, server, "closed", spec, corpus, results, log)
        save()
    if not comparison.rates:
        comparison.rates = fixed_rates(comparison)
        log(f"fixed rates for every server: {', '.join(f'{r:g}' for r in comparison.rates)} req/s")
    for phase in ("open", "null"):
        for server in servers:
            run_phase(comparison, server, phase, spec, corpus, results, log)
            save()
    return comparison


def load_comparison(path: Path) -> Comparison:
    """A ``comparison.json`` written by :func:`compare`."""
    return Comparison.from_json(json.loads(path.read_text()))
