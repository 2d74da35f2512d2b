"""benchmarks.results: steps.csv and run.json, and reading run.json back."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from benchmarks.results import CSV_COLUMNS, RunResult, StepResult, read_run, write_run


def step(load: float, throughput: float, **changes: object) -> StepResult:
    values: dict[str, object] = dict(
        mode="closed", load=load, stable=True, windows=4, accepted_windows=3, seconds=6.0,
        requests=int(throughput * 6), ok=int(throughput * 6), throughput=throughput,
        answered_rate=throughput, mean_ms=5.0, p50_ms=4.0, p90_ms=7.0, p95_ms=8.0,
        p99_ms=12.0, max_ms=20.0,
    )  # fmt: skip
    values.update(changes)
    return StepResult(**values)  # type: ignore[arg-type]


def run(*steps: StepResult) -> RunResult:
    return RunResult(
        name="unit", url="http://127.0.0.1:1/api/classify", mode="closed", client="python",
        corpus="3 images", command="python -m benchmarks sweep URL", started_at="now",
        settings={"window_s": 2.0}, machine={"cores": 2}, versions={"gre": "0.1.0"},
        ceiling=30000.0, steps=list(steps),
    )  # fmt: skip


def test_csv_has_a_row_per_step_with_errors_and_server_timings(tmp_path: Path) -> None:
    result = run(
        step(1, 100.0, server_ms={"queue": 0.5, "inference": 3.0}, mean_batch_size=1.0),
        step(8, 400.0, errors={"503": 4, "conn": 1}, server_ms={"queue": 2.25},
             mean_batch_size=None, stable=False, client_limited=True),
    )  # fmt: skip
    csv_path, _ = write_run(result, tmp_path / "out")
    with csv_path.open() as rows_file:
        reader = csv.DictReader(rows_file)
        rows = list(reader)
        header = reader.fieldnames
    assert header == [*CSV_COLUMNS, "server_inference_ms", "server_queue_ms"]
    assert [row["load"] for row in rows] == ["1", "8"]
    assert rows[0]["throughput"] == "100.0"
    assert rows[0]["errors"] == ""
    assert rows[0]["server_inference_ms"] == "3.0"
    assert rows[1]["errors"] == "503:4;conn:1"
    assert rows[1]["server_inference_ms"] == ""
    assert rows[1]["server_queue_ms"] == "2.25"
    assert rows[1]["mean_batch_size"] == ""
    assert (rows[1]["stable"], rows[1]["client_limited"]) == ("False", "True")


def test_json_round_trips_and_holds_no_nan(tmp_path: Path) -> None:
    result = run(step(1, 0.0, p50_ms=math.nan, p99_ms=math.nan, mean_ms=math.nan))
    _, json_path = write_run(result, tmp_path)
    text = json_path.read_text()
    assert "NaN" not in text
    assert json.loads(text)["steps"][0]["p99_ms"] is None
    back = read_run(json_path)
    assert math.isnan(back.steps[0].p99_ms)
    assert back.steps[0].throughput == 0.0
    assert back.ceiling == 30000.0
    assert back.machine == {"cores": 2}
