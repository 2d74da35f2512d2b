"""benchmarks.report: the comparison report's tables, ratios and losses, from figures made up
so that every outcome is known."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.compare import Comparison, fixed_rates, saturation
from benchmarks.report import fmt_ratio, ratio, write_report
from benchmarks.results import RunResult, StepResult
from tests.benchmarks.test_results import step


def run(name: str, mode: str, steps: list[StepResult]) -> RunResult:
    return RunResult(
        name=name, url="http://127.0.0.1:1/api/classify", mode=mode, client="python",
        corpus="3 images", command="python -m benchmarks compare", started_at="t",
        settings={}, machine={}, versions={}, ceiling=20000.0, steps=steps,
    )  # fmt: skip


def comparison(peer_closed: list[StepResult], peer_open: list[StepResult]) -> Comparison:
    gre_closed = [step(1, 40.0, mean_batch_size=1.0), step(16, 120.0, mean_batch_size=9.5,
                  server_ms={"queue": 3.0, "inference": 80.0})]  # fmt: skip
    gre_open = [
        step(25, 25.0, mode="open", p50_ms=30.0, p99_ms=60.0),
        step(50, 50.0, mode="open", p50_ms=40.0, p99_ms=90.0),
        step(75, 75.0, mode="open", p50_ms=60.0, p99_ms=150.0),
    ]
    gre_null = [step(1, 300.0, p50_ms=2.0), step(16, 900.0)]
    peer_null = [step(1, 250.0, p50_ms=3.0), step(16, 1000.0)]
    return Comparison(
        name="made-up", engine="opencv", servers=["gre", "peer"], rates=[25.0, 50.0, 75.0],
        ceiling=20000.0, command="python -m benchmarks compare --name made-up", started_at="t",
        corpus="3 images", machine={"cpu": "test CPU", "cores": 2}, harness_versions={},
        server_versions={"gre": {"gre": "0.1.0"}, "peer": {}},
        server_commands={"gre": "python -m gre serve", "peer": "peer"},
        settings={"window_s": 2.0, "stable_windows": 3, "tolerance": 0.1, "max_windows": 10,
                  "concurrencies": [1, 16], "null_concurrencies": [1, 16]},
        runs={
            "gre": {"closed": run("gre-closed", "closed", gre_closed),
                    "open": run("gre-open", "open", gre_open),
                    "null": run("gre-null", "closed", gre_null)},
            "peer": {"closed": run("peer-closed", "closed", peer_closed),
                     "open": run("peer-open", "open", peer_open),
                     "null": run("peer-null", "closed", peer_null)},
        },
    )  # fmt: skip


def test_ratios() -> None:
    assert ratio(120, 100) == pytest.approx(1.2)
    assert ratio(None, 100) is None
    assert ratio(1, 0) is None
    assert fmt_ratio(1.2345) == "1.23\u00d7"
    assert fmt_ratio(None) == "n/a"


def test_fixed_rates_are_fractions_of_the_lowest_saturation() -> None:
    made = comparison([step(1, 30.0), step(16, 100.0)], [])
    assert saturation(made.runs["gre"]["closed"].steps) is made.runs["gre"]["closed"].steps[1]
    assert fixed_rates(made) == [25.0, 50.0, 75.0]


def test_report_says_where_gre_loses(tmp_path: Path) -> None:
    peer_open = [
        step(25, 25.0, mode="open", p50_ms=35.0, p99_ms=70.0),
        step(50, 50.0, mode="open", p50_ms=30.0, p99_ms=80.0),  # gre's p99 is 90: a loss
        step(75, 75.0, mode="open", p50_ms=500.0, p99_ms=900.0),
    ]
    made = comparison([step(1, 30.0), step(16, 100.0)], peer_open)  # gre 120: only 1.2x
    text = write_report(made, tmp_path).read_text()
    assert (tmp_path / "made-up.md").is_file()
    assert "| peer | 1.20\u00d7 | 0.86\u00d7 | 1.12\u00d7 | 0.17\u00d7 | **no** |" in text
    assert "| gre | 120.0 | 16 | 4.00 | 12.00 | 9.5 | 0 | — |" in text
    assert "| peer | 100.0 | 16 | 4.00 | 12.00 | n/a | 0 | 1.20\u00d7 |" in text
    assert "- Saturation throughput vs peer: 1.20\u00d7 (target 1.3\u00d7)" in text
    assert "- p99 at 50 req/s vs peer: gre's is 1.12\u00d7 peer's." in text
    assert "- Null-engine saturation vs peer: 0.90\u00d7 (more overhead)." in text
    assert "p99 at 25 req/s vs peer" not in text
    assert "| peer | 1,000.0 | 3.00 | 12.00 | 0.90\u00d7 | 0.67\u00d7 |" in text
    assert "| gre | 16 | 80.00 | 3.00 | 9.5 | 0.00 |" in text
    for plot in ("latency_vs_throughput", "batch_size_vs_load", "latency_at_rates",
                 "null_latency_vs_throughput"):  # fmt: skip
        assert f"(made-up/{plot}.png)" in text
        assert (tmp_path / "made-up" / f"{plot}.png").stat().st_size > 10_000
    assert "Machine: test CPU, 2 logical cores" in text


def test_report_when_gre_wins_and_when_a_peer_failed(tmp_path: Path) -> None:
    peer_open = [step(r, r, mode="open", p99_ms=1000.0) for r in (25.0, 50.0, 75.0)]
    made = comparison([step(16, 60.0)], peer_open)
    made.runs["peer"].pop("null")
    made.failures = {"peer": {"null": "PeerStartError: it would not start"}}
    text = write_report(made, tmp_path).read_text()
    assert "| peer | 2.00\u00d7 | 0.06\u00d7 | 0.09\u00d7 | 0.15\u00d7 | yes |" in text
    assert "| peer | failed: PeerStartError: it would not start |" in text


def test_the_analysis_written_beside_the_data_survives_a_rewrite(tmp_path: Path) -> None:
    made = comparison([step(16, 60.0)], [])
    before = write_report(made, tmp_path).read_text()
    assert "_None yet: write it in `made-up/analysis.md`" in before
    (tmp_path / "made-up" / "analysis.md").write_text("gre batches; the peer does not.\n")
    after = write_report(made, tmp_path).read_text()
    assert "## Analysis\n\ngre batches; the peer does not.\n" in after
