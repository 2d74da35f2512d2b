"""Replicas that survive, through a real server and real replica processes.

Two CPU devices (``devices = ["cpu", "cpu"]``) stand in for two GPUs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import ROOT, Server, running_server, shared

TWO_DEVICES = ("--devices", '["cpu", "cpu"]', "--set", "cpu_threads=1")


def replicas(server: Server) -> list[dict[str, Any]]:
    with server.client() as client:
        return list(client.get("/api/model").json()["replicas"])


def wait_for_replicas(server: Server, ready: int, timeout_s: float = 60.0) -> dict[str, object]:
    end = time.monotonic() + timeout_s
    body: dict[str, object] = {}
    while time.monotonic() < end:
        response = httpx.get(f"{server.url}/readyz", timeout=5)
        body = response.json()
        if body["replicas"] == {"ready": ready, "total": 2}:
            return body
        time.sleep(0.1)
    pytest.fail(f"replicas never reached {ready} ready: {body}\n{server.output()}")


async def post_all(server: Server, count: int, timeout_s: float) -> list[tuple[int, float]]:
    """POST ``count`` cat photos at once; (status, seconds) for each."""
    cat = shared("images/cat.jpg").read_bytes()

    async def one(client: httpx.AsyncClient) -> tuple[int, float]:
        start = time.monotonic()
        response = await client.post("/api/classify", content=cat)
        return response.status_code, time.monotonic() - start

    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(base_url=server.url, timeout=timeout_s, limits=limits) as client:
        return list(await asyncio.gather(*(one(client) for _ in range(count))))


@pytest.mark.parametrize("workers", [1, 2])
async def test_kill_9_under_load(tmp_path: Path, workers: int) -> None:
    deadline_s = 60.0
    settings = (
        *TWO_DEVICES,
        "--set",
        f"timeout_ms={deadline_s * 1000}",
        "--set",
        f"workers={workers}",
    )
    with running_server(tmp_path, *settings) as server:
        victim = replicas(server)[0]
        load = asyncio.ensure_future(post_all(server, 100, deadline_s + 30))
        await asyncio.sleep(0.5)
        os.kill(int(victim["pid"]), signal.SIGKILL)
        results = await load
        statuses = [status for status, _ in results]
        assert set(statuses) <= {200, 503}, statuses
        assert statuses.count(200) >= 50  # the other replica kept serving
        assert max(seconds for _, seconds in results) < deadline_s
        wait_for_replicas(server, ready=2)
        after = replicas(server)
        assert after[0]["restarts"] == 1
        assert after[0]["pid"] != victim["pid"]
        assert after[1]["restarts"] == 0
        with server.client() as client:  # and it serves again
            assert (
                client.post(
                    "/api/classify", content=shared("images/cat.jpg").read_bytes()
                ).status_code
                == 200
            )
    # Killed mid-batch its batch sees the broken connection ("died"); killed between two
    # batches (a loaded machine's scheduling decides) the pool sees the exit first.
    output = server.output()
    assert (
        f"replica 0@cpu (pid {victim['pid']}) died" in output
        or f"replica 0@cpu (pid {victim['pid']}) exited with status -9" in output
    ), output[-3000:]


async def test_hung_replica_is_killed_and_its_requests_answered(tmp_path: Path) -> None:
    settings = (*TWO_DEVICES, "--set", "replica_timeout_ms=1500", "--set", "max_batch_size=4")
    with running_server(tmp_path, *settings) as server:
        victim = replicas(server)[0]
        os.kill(int(victim["pid"]), signal.SIGSTOP)  # alive but never answers
        try:
            results = await post_all(server, 24, 60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(victim["pid"]), signal.SIGCONT)
        statuses = [status for status, _ in results]
        assert set(statuses) <= {200, 503}, statuses
        assert statuses.count(200) >= 20
        wait_for_replicas(server, ready=2)
        assert replicas(server)[0]["restarts"] >= 1
    assert "did not answer a batch" in server.output()


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_drains_then_exits_0(tmp_path: Path, workers: int) -> None:
    settings = (
        "--set",
        "max_batch_size=2",
        "--set",
        "drain_timeout_s=60",
        "--set",
        f"workers={workers}",
    )
    cat = shared("images/cat.jpg").read_bytes()
    with running_server(tmp_path, *settings) as server:
        async with httpx.AsyncClient(
            base_url=server.url, timeout=90, limits=httpx.Limits(max_connections=60)
        ) as client:
            accepted = [
                asyncio.ensure_future(client.post("/api/classify", content=cat)) for _ in range(50)
            ]
            for _ in range(100):  # until all 50 are queued or running
                queue = (await client.get("/api/model")).json()["queue"]
                served = sum(f.done() for f in accepted)
                if queue["waiting"] + queue["in_flight"] + served == 50:
                    break
                await asyncio.sleep(0.05)
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.1)
            assert not all(f.done() for f in accepted), "all finished before the signal"
            late = await client.post("/api/classify", content=cat)
            ready = await client.get("/readyz")
            responses = await asyncio.gather(*accepted)
        assert [r.status_code for r in responses] == [200] * 50
        assert late.status_code == 503
        assert late.json()["error"] == "shutting_down"
        assert late.headers["retry-after"] == "1"
        assert ready.status_code == 503
        assert ready.json()["draining"] is True
        assert server.process.wait(60) == 0
        assert time.monotonic() - signalled < 60


@pytest.mark.parametrize(
    ("engine", "error"),
    [("caffe", "is not a valid caffemodel"), ("opencv", "has no weights for layer 'conv_1'")],
)
def test_corrupt_caffemodel_exits_non_zero_without_a_restart_storm(
    tmp_path: Path, engine: str, error: str
) -> None:
    corrupt = tmp_path / "corrupt.caffemodel"
    corrupt.write_bytes(bytes(range(256)) * 64)
    settings = ("--engine", engine, "--set", f"weights={corrupt}", "--set", "restart_backoff_ms=50")
    with running_server(tmp_path, *settings, ready=False) as server:
        status = server.process.wait(120)
    output = server.output()
    assert status == 1, output
    assert "failed to start 3 times" in output
    assert output.count(error) >= 3
    assert output.count("failed to start:") <= 6  # three attempts, no storm


def test_absent_gpus_are_a_start_up_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gre", "serve", "--devices", "[0, 1]"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "replicas.devices asks for GPU [0, 1], not present" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_replica_over_max_rss_mb_is_replaced_between_batches(tmp_path: Path) -> None:
    # Every replica holds more than 1 MiB, so each is replaced after each batch it answers.
    args = ("--engine", "null", "--set", "max_rss_mb=1")
    cat = shared("images/cat.jpg").read_bytes()
    with running_server(tmp_path, *args) as server, server.client() as client:
        first = replicas(server)[0]["pid"]
        statuses = [client.post("/api/classify", content=cat).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]
        end = time.monotonic() + 60
        while time.monotonic() < end:
            replica = replicas(server)[0]
            if replica["restarts"] == 3 and replica["state"] == "ready":
                break
            time.sleep(0.05)
        assert replica["restarts"] == 3, replica
        assert replica["pid"] != first
        assert "over max_rss_mb 1: replacing it" in server.output()
        assert "gre_replica_restarts_total 3.0" in client.get("/metrics").text
