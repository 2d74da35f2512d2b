"""gre.testing, the one launcher of real servers, on small stand-in processes."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gre.testing import StartError, answers, free_port, log_tail, running, stop

PYTHON = sys.executable


def test_waits_until_the_url_answers_then_stops_it(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    command = [PYTHON, "-m", "http.server", "--bind", "127.0.0.1", str(port)]
    with running(command, log=tmp_path / "log", ready=url, cwd=tmp_path) as process:
        assert answers(url)
        assert process.poll() is None
    assert process.returncode == -signal.SIGTERM
    assert not answers(url)


def test_an_exit_before_ready_raises_with_the_logs_last_lines(tmp_path: Path) -> None:
    code = "import os; print(os.environ['GRE_TESTING_WORD']); raise SystemExit(3)"
    log = tmp_path / "log"
    with (
        pytest.raises(StartError, match=r"^early: exited with 3; its log .*\nhello$"),
        running(
            [PYTHON, "-c", code],
            log=log,
            ready=lambda: False,
            env={"GRE_TESTING_WORD": "hello"},
            name="early",
        ),
    ):
        pytest.fail("yielded without being ready")


def test_not_ready_in_time_raises_and_stops_it(tmp_path: Path) -> None:
    started: list[subprocess.Popen[bytes]] = []

    def keep(process: subprocess.Popen[bytes]) -> None:
        started.append(process)
        stop(process)

    command = [PYTHON, "-c", "import time; time.sleep(60)"]
    with (
        pytest.raises(StartError, match=r"not ready after 0\.3 s"),
        running(command, log=tmp_path / "log", ready=lambda: False, timeout_s=0.3, stopper=keep),
    ):
        pytest.fail("yielded without being ready")
    assert started[0].returncode == -signal.SIGTERM


def test_stop_kills_what_ignores_sigterm_after_the_grace(tmp_path: Path) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('in'); "
        "time.sleep(60)"
    )
    log = tmp_path / "log"
    with running(
        [PYTHON, "-u", "-c", code], log=log, ready=lambda: log_tail(log) == "in"
    ) as process:
        stop(process, grace_s=0.2)
        assert process.returncode == -signal.SIGKILL
