"""A run's results: one :class:`StepResult` per load step, written as CSV and JSON.

``<dir>/steps.csv`` has one row per step (the figures a spreadsheet wants); ``<dir>/run.json``
has everything: the run's settings, machine, versions, the client's ceiling, and per step
the figures plus every window's throughput and mean latency.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass
class StepResult:
    """One load step, measured over its accepted windows.

    ``mode`` is ``"closed"`` (``load`` = concurrency) or ``"open"`` (``load`` = offered
    req/s). Throughput counts successful answers per second; latencies are ms over them.
    ``server_ms``: mean Server-Timing durations (ms) by name. ``mean_batch_size``: images per
    batch while measured (``None``: the server reports none). ``client_cpu_cores``: the
    client's CPU seconds per wall second. ``client_lag_p99_ms``: open loop only, how late
    the client's scheduler sent (p99). ``client_limited``: throughput above the limit
    fraction of the client's ceiling, or a lagging open-loop scheduler.
    """

    mode: str
    load: float
    stable: bool
    windows: int
    accepted_windows: int
    seconds: float
    requests: int
    ok: int
    throughput: float
    answered_rate: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int] = field(default_factory=dict)
    server_ms: dict[str, float] = field(default_factory=dict)
    mean_batch_size: float | None = None
    unanswered: int = 0
    client_cpu_cores: float = 0.0
    client_lag_p99_ms: float | None = None
    client_limited: bool = False
    window_throughputs: list[float] = field(default_factory=list)
    window_mean_ms: list[float] = field(default_factory=list)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@dataclass
class RunResult:
    """A sweep: what was driven, how, on what, and its steps.

    ``ceiling`` is the client's own max req/s against a trivial endpoint on this machine
    (``None`` when not measured).
    """

    name: str
    url: str
    mode: str
    client: str
    corpus: str
    command: str
    started_at: str
    settings: dict[str, Any]
    machine: dict[str, Any]
    versions: dict[str, str]
    ceiling: float | None
    steps: list[StepResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = _finite(asdict(self))
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunResult:
        """Inverse of :meth:`to_json` (``null`` floats come back as NaN where required)."""
        steps = [_step_from_json(step) for step in data.get("steps", [])]
        return cls(**{**data, "steps": steps})


def _step_from_json(data: dict[str, Any]) -> StepResult:
    floats = {f.name for f in fields(StepResult) if f.type == "float"}
    values: dict[str, Any] = {
        k: (math.nan if k in floats and v is None else v) for k, v in data.items()
    }
    return StepResult(**values)


def _finite(value: Any) -> Any:
    """NaN and infinities become ``null``: JSON has no NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


#: The CSV's fixed columns, in order; then ``server_<name>_ms`` for each Server-Timing name.
CSV_COLUMNS = (
    "mode", "load", "throughput", "answered_rate", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
    "max_ms", "mean_ms", "requests", "ok", "errors", "mean_batch_size", "stable", "windows",
    "accepted_windows", "seconds", "unanswered", "client_cpu_cores", "client_lag_p99_ms",
    "client_limited",
)  # fmt: skip


def csv_rows(run: RunResult) -> tuple[list[str], list[dict[str, Any]]]:
    """(header, rows) of ``steps.csv``: errors as ``status:count`` pairs joined by ``;``."""
    timing_names = sorted({name for step in run.steps for name in step.server_ms})
    header = [*CSV_COLUMNS, *(f"server_{name}_ms" for name in timing_names)]
    rows = []
    for step in run.steps:
        row: dict[str, Any] = {}
        for column in CSV_COLUMNS:
            value = getattr(step, column)
            if column == "errors":
                value = ";".join(f"{status}:{count}" for status, count in value.items())
            elif isinstance(value, float):
                value = "" if math.isnan(value) else round(value, 3)
            elif value is None:
                value = ""
            row[column] = value
        for name in timing_names:
            ms = step.server_ms.get(name)
            row[f"server_{name}_ms"] = "" if ms is None else round(ms, 3)
        rows.append(row)
    return header, rows


def write_run(run: RunResult, directory: Path) -> tuple[Path, Path]:
    """Write ``steps.csv`` and ``run.json`` into ``directory`` (made if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = directory / "steps.csv", directory / "run.json"
    header, rows = csv_rows(run)
    with csv_path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    json_path.write_text(json.dumps(run.to_json(), indent=2) + "\n")
    return csv_path, json_path


def read_run(path: Path) -> RunResult:
    """A ``run.json`` written by :func:`write_run`."""
    return RunResult.from_json(json.loads(path.read_text()))
