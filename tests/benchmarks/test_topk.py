"""benchmarks.topk: the full-sort reference is the stable sort, and a run prints its table."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.topk import full_sort_top_k, main


def test_the_reference_is_a_stable_descending_sort() -> None:
    rows = np.array([[0.1, 0.5, 0.5, 0.2], [0.4, 0.3, 0.2, 0.1]], dtype=np.float32)
    got = full_sort_top_k(rows, [3, 1])
    assert got[0].indices == (1, 2, 3)
    assert got[1].indices == (0,)
    assert got[1].confidences == pytest.approx((0.4,))


def test_a_run_prints_both_timings_and_their_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--batch", "4", "--classes", "100", "--top-k", "3", "--repeat", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "batch 4, 100 classes, top_k 3: us per image"
    step, ours, reference, ratio = lines[2].split()
    assert step == "top_k"
    assert float(ours) > 0
    assert float(reference) > 0
    # Each timing is printed to 0.05 us: the ratio, of the unrounded ones, lies within.
    low = (float(ours) - 0.05) / (float(reference) + 0.05)
    high = (float(ours) + 0.05) / max(float(reference) - 0.05, 1e-9)
    assert low - 0.005 <= float(ratio) <= high + 0.005
    softmax = lines[3].split()
    assert softmax[0] == "softmax"
    assert float(softmax[1]) > 0
