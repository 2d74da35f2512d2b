"""benchmarks.overhead: wrk's report and gre's metrics parsed, a process tree's CPU read from
/proc, the decode limit, and one real run against the trivial endpoint and gre."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.overhead import (
    CLK_TCK,
    DecodeLimit,
    Row,
    WrkResult,
    decode_limit,
    default_workers,
    gre_window,
    main,
    parse_only,
    parse_workers,
    parse_wrk,
    process_tree,
    read_stat,
    row_name,
    table,
    tiny_jpeg,
    tree_cpu,
)
from gre.metrics import Metrics
from tests.support import shared

# Captured from wrk 4.1.0 (Debian's), POSTing cat.jpg: against the trivial endpoint, against
# `python3 -m http.server` (501 to every POST) and against a server that resets every
# connection.
WRK_OK = """\
Running 2s test @ http://127.0.0.1:8391/api/classify
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    10.87ms    4.48ms  99.52ms   84.33%
    Req/Sec     5.89k     0.96k    6.77k    80.00%
  11770 requests in 2.02s, 1.41MB read
Requests/sec:   5839.61
Transfer/sec:    718.61KB
"""
WRK_NON_2XX = """\
Running 1s test @ http://127.0.0.1:8393/
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.79ms    4.70ms  24.39ms   85.33%
    Req/Sec     1.08k   402.74     1.71k    70.00%
  1076 requests in 1.00s, 583.38KB read
  Non-2xx or 3xx responses: 1076
Requests/sec:   1075.78
Transfer/sec:    583.26KB
"""
WRK_SOCKET_ERRORS = """\
Running 1s test @ http://127.0.0.1:8395/
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.00us    0.00us   0.00us    -nan%
    Req/Sec     0.00      0.00     0.00      -nan%
  0 requests in 1.00s, 0.00B read
  Socket errors: connect 0, read 11560, write 0, timeout 0
Requests/sec:      0.00
Transfer/sec:       0.00B
"""


def test_parse_wrk() -> None:
    assert parse_wrk(WRK_OK) == WrkResult(11770, 2.02, 5839.61, 0, 0)
    assert parse_wrk(WRK_NON_2XX) == WrkResult(1076, 1.0, 1075.78, 1076, 0)
    assert parse_wrk(WRK_SOCKET_ERRORS) == WrkResult(0, 1.0, 0.0, 0, 11560)
    with pytest.raises(ValueError, match="not wrk's report"):
        parse_wrk("Summary:\n  Total: 1.0 secs\n  Requests/sec: 10\n")  # hey's, not wrk's


def test_gre_window_from_real_metrics() -> None:
    metrics = Metrics(max_batch_size=32)
    metrics.observe_batch("0@cpu", "cpu", 4, 0.01, 0.0)
    metrics.requests.labels("200").inc(4)
    before = metrics.render().decode()
    for size in (8, 16):
        metrics.observe_batch("0@cpu", "cpu", size, 0.01, 0.0)
    metrics.requests.labels("200").inc(24)
    metrics.requests.labels("503").inc(2)
    window = gre_window(before, metrics.render().decode())
    assert window.mean_batch == pytest.approx(12.0)
    assert window.statuses == {"200": 24, "503": 2}
    # No batch in the window: no mean.
    assert gre_window(before, before).mean_batch is None
    with pytest.raises(ValueError, match="gre_batch_size"):
        gre_window("", before)


BURNER = textwrap.dedent(
    """
    import subprocess, sys
    # The child idles; its own child burns CPU for 5 s: the tree's CPU is the grandchild's.
    burn = "import time\\nend = time.time() + 5\\nwhile time.time() < end: pass\\n"
    subprocess.run([sys.executable, "-c", burn])
    """
)


def test_process_tree_cpu_counts_descendants() -> None:
    child = subprocess.Popen([sys.executable, "-c", BURNER], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while len(process_tree(child.pid)) < 2:  # until the grandchild has started
            assert time.monotonic() < deadline, "the burning grandchild never started"
            time.sleep(0.05)
        before, idle_before = process_tree(child.pid), read_stat(child.pid)
        time.sleep(0.5)
        after, idle_after = process_tree(child.pid), read_stat(child.pid)
        cpu = tree_cpu(before, after)
        assert 0.2 < cpu.seconds < 1.5  # one busy core for 0.5 s, with ticks of 10 ms
        assert (cpu.before, cpu.after, cpu.both) == (2, 2, 2)
        assert sum(after.values()) > sum(before.values())
        # The idle child's own ticks: the grandchild's are not its own.
        assert idle_before is not None
        assert idle_after is not None
        assert idle_after.own - idle_before.own <= 0.1 * (cpu.seconds * CLK_TCK)
    finally:
        child.kill()  # the grandchild ends by itself within 5 s
        child.wait()
    assert process_tree(child.pid) == {}  # a process that is gone has no tree


def test_tiny_jpeg_is_a_16x16_jpeg() -> None:
    data = tiny_jpeg(shared("images/cat.jpg"))
    assert data[:2] == b"\xff\xd8"
    assert 300 < len(data) < 2000
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    assert image.shape == (16, 16, 3)


def test_the_table_flags_errors_and_shared_cores() -> None:
    cat = Row("cat", "gre null, cat.jpg", 900, 2.0, 450.0, 12, 3, 2.0, 2222.2, 1.0, 2)
    cat.statuses = {"200": 888, "503": 12}
    printed = table([cat], DecodeLimit(200.0, 2000.0, 0.4, 2))
    assert "12 non-2xx, 503: 12, 3 socket errors" in printed
    assert "1000/s if free" in printed  # 2 processes / 2000 µs per image
    assert printed.endswith("(goal >= 0.9)  [errors: see notes]  [decode limit on shared cores]")
    assert "shared" not in table([], DecodeLimit(900.0, 2000.0, 1.9, 2))


def test_parse_only() -> None:
    assert parse_only("decode,trivial") == ("trivial", "decode")  # the table's order
    with pytest.raises(argparse.ArgumentTypeError, match="unknown rows fast"):
        parse_only("tiny,fast")


def test_decode_limit_decodes() -> None:
    limit = decode_limit(shared("images/cat.jpg").read_bytes(), 0.2, processes=2)
    assert limit.images_per_s > 10
    assert limit.cpu_us_per_image > 0
    assert 0 < limit.cores <= 2.2  # two processes keep two cores busy at most


def test_a_short_run_against_the_trivial_endpoint_and_gre(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if shutil.which("wrk") is None:
        pytest.fail("benchmarks.overhead needs Debian's wrk: apt-get install wrk (make setup does)")
    out = tmp_path / "figures.json"
    figures = main(
        ["--seconds", "1", "--warmup", "1", "--only", "trivial,tiny", "--workers", "1,2",
         "--json", str(out)]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert json.loads(out.read_text()) == json.loads(json.dumps(figures))
    rows = figures["rows"]
    assert set(rows) == {"trivial", "tiny", "tiny-w2"}
    for row in rows.values():
        assert row["requests"] > 0
        assert row["rps"] > 0
        assert row["cpu_us_per_request"] > 0
        assert (row["non_2xx"], row["socket_errors"]) == (0, 0), printed
    assert rows["trivial"]["processes"] == 1
    assert rows["tiny"]["processes"] >= 2  # gre's front end and its replica
    assert rows["tiny-w2"]["processes"] >= 4  # and two HTTP workers
    assert rows["tiny"]["mean_batch"] >= 1
    # The replica's share: some, not all (the front end parses HTTP and batches).
    assert 0 < rows["tiny"]["replica_us_per_request"] < rows["tiny"]["cpu_us_per_request"]
    assert rows["trivial"]["replica_us_per_request"] is None
    # The server process's own share: all of the trivial one's, part of gre's.
    assert rows["trivial"]["main_us_per_request"] == pytest.approx(
        rows["trivial"]["cpu_us_per_request"], rel=0.05
    )
    for name in ("tiny", "tiny-w2"):
        assert 0 < rows[name]["main_us_per_request"] < rows[name]["cpu_us_per_request"]
    assert "gre w2 main process (tiny): " in printed
    # gre's count over the window also holds answers to requests wrk gave up at its end.
    assert set(rows["tiny"]["statuses"]) == {"200"}
    assert figures["cpu_ratio_tiny_to_trivial"] == rows["tiny"]["ratio_to_trivial"] > 0
    assert figures["decode_limit"] is None
    assert "trivial Starlette" in printed
    assert "gre null, w1, 16x16 JPEG" in printed
    assert "gre null, w2, 16x16 JPEG" in printed
    assert "gre w1 CPU/request (16x16) / trivial's" in printed
    assert "gre w2 req/s / w1's (tiny)" in printed


def test_worker_counts_parse_and_default_to_one_and_the_cores() -> None:
    assert parse_workers("1,4") == [1, 4]
    for bad in ("", "0", "two", "1,-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_workers(bad)
    assert default_workers()[0] == 1
    assert row_name("cat", 1) == "cat"
    assert row_name("cat", 3) == "cat-w3"
