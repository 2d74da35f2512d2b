"""benchmarks.stats: Server-Timing parsing, percentiles over successful answers, errors by
status, mean batch size from two snapshots."""

from __future__ import annotations

import math

import pytest

from benchmarks.stats import mean_batch_size, parse_server_timing, summarize


def test_parse_server_timing_reads_gres_header() -> None:
    header = b"queue;dur=1.250, preprocess;dur=3.500, inference;dur=12.000"
    assert parse_server_timing(header) == {"queue": 1.25, "preprocess": 3.5, "inference": 12.0}


def test_parse_server_timing_skips_what_it_cannot_read() -> None:
    header = b'cache;desc="hit", db;dur="2.5";desc=x, broken;dur=abc, total;DUR=7'
    assert parse_server_timing(header) == {"db": 2.5, "total": 7.0}
    assert parse_server_timing(b"") == {}


def test_summarize_percentiles_errors_and_timings() -> None:
    ok = [(float(i), (i + 1) / 1e3, 200, b"queue;dur=2, inference;dur=4") for i in range(100)]
    errors = [(100.0, 0.0001, 503, b""), (101.0, 0.0, 0, b""), (102.0, 0.0, 0, b"")]
    summary = summarize(ok + errors, 10.0)
    assert summary.requests == 103
    assert summary.ok == 100
    assert summary.throughput == pytest.approx(10.0)
    assert summary.answered_rate == pytest.approx(10.3)
    # Latencies 1..100 ms (numpy's linear interpolation); the fast 503 is not among them.
    assert summary.p50_ms == pytest.approx(50.5)
    assert summary.p99_ms == pytest.approx(99.01)
    assert summary.max_ms == pytest.approx(100.0)
    assert summary.mean_ms == pytest.approx(50.5)
    assert summary.errors == {"503": 1, "conn": 2}
    assert summary.server_ms == {"queue": 2.0, "inference": 4.0}


def test_summarize_without_a_successful_answer() -> None:
    summary = summarize([(0.0, 0.001, 503, b"")], 1.0)
    assert summary.ok == 0
    assert summary.throughput == 0
    assert math.isnan(summary.p99_ms)
    assert summary.errors == {"503": 1}


def test_mean_batch_size_between_snapshots() -> None:
    before = {1: 10, 4: 5}
    after = {1: 12, 4: 9, 8: 2}  # 2 of 1, 4 of 4, 2 of 8 -> 34 images in 8 batches
    assert mean_batch_size(before, after) == pytest.approx(34 / 8)
    assert mean_batch_size(before, before) is None
    assert mean_batch_size(None, after) is None
