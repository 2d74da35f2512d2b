"""benchmarks.gre_hey: GRE's hey invocation against gre serving CaffeNet (scaled down to a
few requests), and parsing hey's summary."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks.gre_hey import GRE_FIGURE, caffenet_args, gre_hey, hey_command, parse_hey_summary
from gre.config import load_config
from tests.support import shared

HEY_SUMMARY = """
Summary:
  Total:\t2.5000 secs
  Requests/sec:\t80.0000

Latency distribution:
  10% in 0.0500 secs
  50% in 0.0900 secs
  99% in 0.2500 secs

Status code distribution:
  [200]\t198 responses
  [503]\t2 responses
"""


def test_parse_hey_summary() -> None:
    summary = parse_hey_summary(HEY_SUMMARY)
    assert summary.rps == 80.0
    assert summary.percentiles_ms == {10: 50.0, 50: 90.0, 99: 250.0}
    assert summary.statuses == {"200": 198, "503": 2}
    with pytest.raises(ValueError, match="hey's summary"):
        parse_hey_summary("Error: connection refused")


def test_hey_command_is_gres_invocation() -> None:
    command = hey_command("http://127.0.0.1:8000/api/classify", shared("images/cat.jpg"), 8, 200000)
    assert command[:7] == ["hey", "-c", "8", "-n", "200000", "-m", "POST"]
    assert command[7:] == [
        "-D",
        str(shared("images/cat.jpg")),
        "http://127.0.0.1:8000/api/classify",
    ]


def test_caffenet_args_make_a_valid_gre_config() -> None:
    args, weights = caffenet_args()
    if args[0] == "--config":  # the real files under models/
        config = load_config(Path(args[1]), {})
    else:
        assert args[::2] == ["--set"] * (len(args) // 2)
        config = load_config(None, {}, dict(a.split("=", 1) for a in args[1::2]))
    assert config.model.name == "bvlc_reference_caffenet"
    assert config.preprocess.mean_mode == "image"
    assert "weights" in weights


def test_gre_hey_runs_against_caffenet(capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("hey") is None:
        pytest.fail("this test needs Debian's hey: apt-get install hey (make setup does)")
    summary = gre_hey(requests=24, concurrency=8, warmup=8)
    assert summary.statuses == {"200": 24}
    assert summary.rps > 0
    out = capsys.readouterr().out
    assert "hey -c 8 -n 24 -m POST -D" in out
    assert GRE_FIGURE in out
