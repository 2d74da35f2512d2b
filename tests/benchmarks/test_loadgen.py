"""benchmarks.httpclient and benchmarks.loadgen against a real local server (the trivial
endpoint, a real process on 127.0.0.1), and against a port nobody listens on."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from benchmarks.httpclient import Connection, Target, build_request, fetch
from benchmarks.loadgen import ClosedLoop, OpenLoop, image_requests
from benchmarks.servers import free_port, trivial_endpoint
from tests.support import shared


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with trivial_endpoint() as url:
        yield url


def test_target_parse() -> None:
    target = Target.parse("http://127.0.0.1:8000/api/classify?top_k=2")
    assert target == Target("127.0.0.1", 8000, "/api/classify?top_k=2")
    assert target.origin == "http://127.0.0.1:8000"
    assert Target.parse("http://localhost/").port == 80
    with pytest.raises(ValueError, match="http://"):
        Target.parse("https://127.0.0.1/api")


def test_build_request_is_a_complete_post() -> None:
    request = build_request(Target("h", 1, "/p"), "POST", b"abc", "image/jpeg")
    assert request == (
        b"POST /p HTTP/1.1\r\nHost: h:1\r\nContent-Length: 3\r\nContent-Type: image/jpeg\r\n\r\nabc"
    )


async def test_connection_keeps_alive_and_reads_server_timing(base: str) -> None:
    target = Target.parse(f"{base}/api/classify")
    connection = await Connection.open(target, keep_body=True)
    try:
        request = image_requests(target, [shared("images/cat.jpg").read_bytes()])[0]
        for _ in range(3):  # the same socket, one request after another
            response = await connection.send(request)
            assert response.status == 200
            assert response.body == b"[]"
            assert response.keep_alive
            assert response.server_timing.startswith(b"queue;dur=")
    finally:
        connection.close()
    assert (await fetch(target.with_path("/anything"))).status == 200


async def test_closed_loop_runs_its_workers_until_stopped(base: str) -> None:
    target = Target.parse(f"{base}/api/classify")
    images = [shared("images/cat.jpg").read_bytes(), shared("images/fish-bike.jpg").read_bytes()]
    load = ClosedLoop(target, image_requests(target, images), concurrency=4)
    await load.start()
    await asyncio.sleep(0.3)
    unanswered = await load.stop()
    samples = load.recorder.samples
    assert len(samples) > 50
    assert {s[2] for s in samples} == {200}
    assert all(s[1] > 0 for s in samples)
    assert [s[0] for s in samples] == sorted(s[0] for s in samples)  # completion order
    assert 0 <= unanswered <= 4


async def test_open_loop_sends_at_the_rate_whatever_the_answers(base: str) -> None:
    target = Target.parse(f"{base}/api/classify")
    load = OpenLoop(target, image_requests(target, [b"x" * 100]), rate=200, poisson=False)
    await load.start()
    await asyncio.sleep(0.5)
    await load.stop()
    # Constant gaps of 5 ms over 0.5 s: about 100 arrivals (the first at once).
    assert 85 <= len(load.recorder.samples) <= 102
    assert len(load.recorder.lags) >= len(load.recorder.samples)
    assert {s[2] for s in load.recorder.samples} == {200}


async def test_refused_connections_are_errors_not_crashes() -> None:
    target = Target.parse(f"http://127.0.0.1:{free_port()}/api/classify")
    closed = ClosedLoop(target, image_requests(target, [b"x"]), concurrency=2)
    await closed.start()
    await asyncio.sleep(0.1)
    await closed.stop()
    opened = OpenLoop(target, image_requests(target, [b"x"]), rate=100)
    await opened.start()
    await asyncio.sleep(0.1)
    await opened.stop()
    for samples in (closed.recorder.samples, opened.recorder.samples):
        assert samples
        assert {s[2] for s in samples} == {0}
