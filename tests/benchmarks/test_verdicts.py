"""benchmarks/verdicts.py: one line per target, and the script's outcome."""

from __future__ import annotations

import pytest

from benchmarks.verdicts import print_verdicts


def test_every_target_gets_a_line_and_one_miss_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert print_verdicts({"a met": True, "b missed": False}) is False
    assert capsys.readouterr().out == "PASS  a met\nFAIL  b missed\n"


def test_all_met_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert print_verdicts({"a": True, "b": True}) is True
    assert capsys.readouterr().out == "PASS  a\nPASS  b\n"
