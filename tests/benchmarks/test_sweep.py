"""benchmarks.sweep end to end: ``python -m benchmarks sweep`` against a real gre (null
engine), with tiny windows; CSV, JSON and PNGs come out with sane content."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner

from benchmarks.__main__ import main
from benchmarks.corpus import load_corpus
from benchmarks.runner import sweep
from benchmarks.steady import Settings
from benchmarks.sweep import SweepSpec, client_limited
from tests.benchmarks.test_results import step
from tests.support import Server, running_server, shared

TINY = ["--window-s", "0.3", "--warmup-s", "0.2", "--max-windows", "3"]


@pytest.fixture(scope="module")
def gre_null(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("bench")
    with running_server(tmp, "--engine", "null", "--set", "access_log=false") as server:
        yield server


def test_closed_loop_sweep_writes_csv_json_and_plots(gre_null: Server, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["sweep", f"{gre_null.url}/api/classify", "--concurrency", "1,4", "--no-ceiling"]
    result = CliRunner().invoke(main, [*args, *TINY, "--name", "smoke", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "smoke: closed loop" in result.output

    with (out / "steps.csv").open() as rows_file:
        rows = list(csv.DictReader(rows_file))
    assert [row["load"] for row in rows] == ["1.0", "4.0"]
    for row in rows:
        assert float(row["throughput"]) > 0
        assert row["errors"] == ""
        assert 0 < float(row["p50_ms"]) <= float(row["p99_ms"]) <= float(row["max_ms"])

    run = json.loads((out / "run.json").read_text())
    assert run["mode"] == "closed"
    assert run["machine"]["cores"] >= 1
    one, four = run["steps"]
    # gre's Server-Timing and batch counts come through.
    assert set(one["server_ms"]) == {"queue", "preprocess", "inference"}
    assert one["mean_batch_size"] == 1.0  # one request at a time: every batch holds one
    assert 1.0 <= four["mean_batch_size"] <= 4.0
    assert one["windows"] == one["accepted_windows"] == 3  # max_windows 3: all are kept

    for plot in ("latency_vs_throughput.png", "batch_size_vs_load.png"):
        image = cv2.imread(str(out / plot))
        assert image is not None, plot
        assert image.shape[0] > 300, plot
        assert image.shape[1] > 500, plot
        assert image.std() > 10, f"{plot} is blank"


def test_open_loop_step_against_gre(gre_null: Server, tmp_path: Path) -> None:
    spec = SweepSpec(
        f"{gre_null.url}/api/classify", "open", [40.0],
        settings=Settings(window_s=0.4, warmup_s=0.2, max_windows=3),
    )  # fmt: skip
    run = sweep("open", spec, load_corpus(shared("images")), tmp_path, ceiling=30000.0)
    (only,) = run.steps
    assert (only.mode, only.load) == ("open", 40.0)
    assert 20 < only.throughput < 60
    assert only.client_lag_p99_ms is not None
    assert only.client_lag_p99_ms >= 0
    assert (tmp_path / "steps.csv").is_file()
    assert (tmp_path / "run.json").is_file()


def test_a_step_near_the_clients_ceiling_is_flagged() -> None:
    spec = SweepSpec("http://127.0.0.1:1/", "closed", [1])
    assert spec.client == "python"
    assert client_limited(step(8, 600.0), ceiling=1000.0)
    assert not client_limited(step(8, 400.0), ceiling=1000.0)
    assert not client_limited(step(8, 400.0), ceiling=None)
    lagging = step(8, 10.0, mode="open", client_lag_p99_ms=5.0, p99_ms=20.0)
    assert client_limited(lagging, ceiling=1000.0)


def test_sweep_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="open loop"):
        SweepSpec("http://127.0.0.1:1/", "open", [10], client="hey")
    with pytest.raises(ValueError, match="whole numbers"):
        SweepSpec("http://127.0.0.1:1/", "closed", [1.5])
    result = CliRunner().invoke(main, ["sweep", "http://127.0.0.1:1/", "--mode", "open"])
    assert result.exit_code != 0
    assert "positive numbers" in result.output
