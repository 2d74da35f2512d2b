"""benchmarks/reload.py's windows and rows (the run itself is a benchmark, not a test)."""

from __future__ import annotations

from benchmarks.loadgen import Sample
from benchmarks.reload import row, window

SAMPLES: list[Sample] = [
    (1.0, 0.010, 200, b""),
    (2.0, 0.020, 200, b""),
    (2.5, 0.030, 503, b""),
    (3.0, 0.040, 200, b""),
]


def test_a_window_holds_what_completed_in_it_half_open() -> None:
    assert window(SAMPLES, 1.0, 2.5) == SAMPLES[:2]
    assert window(SAMPLES, 2.5, 3.0) == [SAMPLES[2]]
    assert window(SAMPLES, 4.0, 5.0) == []


def test_a_row_counts_answers_and_names_every_non_200() -> None:
    name, answers, rate, p50, p99, errors = row("during", window(SAMPLES, 2.0, 3.5), 1.5)
    assert (name, answers) == ("during", "3")
    assert rate == "1.3"  # two 200s in 1.5 s
    assert float(p50) == 30.0  # latencies of the 200s only: 20 and 40 ms
    assert float(p99) == 39.8
    assert errors == "503: 1"


def test_a_clean_window_says_none() -> None:
    assert row("before", window(SAMPLES, 0.0, 2.1), 2.1)[-1] == "none"
