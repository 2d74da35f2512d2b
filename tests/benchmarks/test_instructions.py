"""benchmarks.instructions: callgrind's dumps read, and one real counted run of the trivial
endpoint and gre's front end under Valgrind."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.instructions import (
    REPLICA_ARG,
    UNCOVERED,
    http_workers,
    main,
    newest_dump,
    parse_only,
    parse_summary,
    valgrind_command,
)

# The head of a dump callgrind_control --dump wrote (valgrind 3.19, Debian's).
DUMP = """# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 2534
cmd:  python .venv/bin/gre serve --engine null
part: 4

desc: I1 cache:
desc: Timerange: Basic block 595292383 - 765314517
desc: Trigger: dump

positions: line
events: Ir
summary: 825006787

ob=(1) /usr/lib/x86_64-linux-gnu/libc.so.6
"""


def test_parse_summary() -> None:
    assert parse_summary(DUMP) == 825006787
    assert parse_summary("events: Ir\ntotals: 12\n") == 12
    with pytest.raises(ValueError, match="no summary line"):
        parse_summary("events: Ir\n")


def test_newest_dump_is_the_highest_numbered_of_the_pid(tmp_path: Path) -> None:
    for name in ["callgrind.7.1", "callgrind.7.10", "callgrind.7.9", "callgrind.70.11"]:
        (tmp_path / name).write_text(DUMP)
    (tmp_path / "callgrind.7").write_text(DUMP)  # the dump at exit: not numbered
    assert newest_dump(tmp_path, 7).name == "callgrind.7.10"
    with pytest.raises(FileNotFoundError, match="no callgrind dump of pid 8"):
        newest_dump(tmp_path, 8)


def test_parse_only_keeps_the_tables_order() -> None:
    assert parse_only("w2,tiny,trivial") == ("trivial", "tiny", "w2")
    with pytest.raises(argparse.ArgumentTypeError, match="unknown rows w3"):
        parse_only("tiny,w3")


def test_valgrind_command_counts_nothing_until_asked_and_without_coverage() -> None:
    command = valgrind_command(["python", "-m", "x"], Path("/tmp/d"))
    assert command[:5] == [
        "env", "-u", "COVERAGE_PROCESS_CONFIG", "-u", "COVERAGE_PROCESS_START",
    ]  # fmt: skip
    assert command[5:10] == [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", "--trace-children=no",
        "--callgrind-out-file=/tmp/d/callgrind.%p",
    ]  # fmt: skip
    assert command[10:] == ["python", "-m", "x"]
    with_children = valgrind_command(["python", "-m", "x"], Path("/tmp/d"), children=True)
    assert with_children[8:10] == [
        "--trace-children=yes", f"--trace-children-skip-by-arg={REPLICA_ARG}",
    ]  # fmt: skip
    assert with_children[11:] == ["python", "-m", "x"]


def test_env_leaves_coverage_out_of_the_counted_process() -> None:
    environment = {**os.environ, "COVERAGE_PROCESS_CONFIG": "x", "COVERAGE_PROCESS_START": "y"}
    shown = subprocess.run(
        [*UNCOVERED, sys.executable, "-c", "import os; print(sorted(os.environ))"],
        env=environment, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "COVERAGE_PROCESS_CONFIG" not in shown
    assert "COVERAGE_PROCESS_START" not in shown
    assert "PATH" in shown  # the rest is kept


def test_http_workers_are_the_children_running_gre_http_worker(tmp_path: Path) -> None:
    (tmp_path / "10" / "task" / "10").mkdir(parents=True)
    (tmp_path / "10" / "task" / "10" / "children").write_text("11 12 13 ")
    commands = {
        11: b"python\0-c\0from gre.http.worker import main; main()\0" + b"5\0",
        12: b"python\0-c\0from gre.replicas.worker import main; main()\0" + b"7\0",
        13: b"python\0-c\0from gre.http.worker import main; main()\0" + b"6\0",
    }
    for pid, command in commands.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cmdline").write_bytes(command)
    assert http_workers(10, tmp_path) == [11, 13]


def test_a_short_counted_run_of_the_trivial_endpoint_and_gre(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = [tool for tool in ("valgrind", "callgrind_control", "wrk") if not shutil.which(tool)]
    if missing:
        pytest.fail(f"benchmarks.instructions needs {missing}: apt-get install valgrind wrk")
    out = tmp_path / "figures.json"
    # A warm-up long enough for each counted process to have answered before the window,
    # under CI's coverage too: a process's first requests run code for the first time (and
    # coverage decides whether to trace each file). After a 1 s one, the w2 window once saw
    # 1 request end under wrk while the main process answered 16-image batches of others.
    figures = main(["--seconds", "2", "--warmup", "3", "--json", str(out)])
    printed = capsys.readouterr().out
    assert json.loads(out.read_text()) == json.loads(json.dumps(figures))
    rows = figures["rows"]
    assert set(rows) == {"trivial", "tiny", "cat", "w2-main", "w2-workers"}
    for row in rows.values():
        assert row["requests"] > 0
        assert row["per_request"] == row["instructions"] / row["requests"]
        # A request through Starlette or gre's front end: tens of thousands of instructions
        # at the least (the window's count, not the start-up's: counting began after it).
        assert 20_000 < row["per_request"] < 20_000_000
    trivial, tiny = rows["trivial"], rows["tiny"]
    assert tiny["ratio_to_trivial"] == tiny["per_request"] / trivial["per_request"]
    assert trivial["ratio_to_trivial"] is None
    assert trivial["mean_batch"] is None
    assert tiny["mean_batch"] >= 1
    # A photo's 140 kB cost more than 16x16 pixels' 800 bytes (scan count, copies).
    assert rows["cat"]["per_request"] > tiny["per_request"]
    # The main process and the workers count the same window's requests.
    assert rows["w2-main"]["requests"] == rows["w2-workers"]["requests"]
    for label in (
        "trivial Starlette (16x16 body)",
        "gre null front end, w1, 16x16 JPEG",
        "gre null front end, w1, cat.jpg",
        "gre null w2, main process, 16x16",
        "gre null w2, 2 HTTP workers, 16x16",
    ):
        assert label in printed
