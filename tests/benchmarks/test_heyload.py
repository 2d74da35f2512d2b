"""benchmarks.heyload and benchmarks.ceiling: hey's per-request CSV, from a real hey run
against the trivial endpoint, and each client's ceiling."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from benchmarks.ceiling import hey_ceiling, python_ceiling
from benchmarks.heyload import HeyWindows, parse_hey_csv
from tests.support import shared


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    if shutil.which("hey") is None:
        pytest.fail("these tests need Debian's hey: apt-get install hey (make setup does)")
    from benchmarks.servers import trivial_endpoint

    with trivial_endpoint() as url:
        yield url


def test_parse_hey_csv() -> None:
    text = (
        "response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,offset\n"
        "0.0040,0.0003,0.0000,0.0002,0.0001,0.0001,200,0.0100\n"
        "0.0020,0.0000,0.0000,0.0001,0.0000,0.0000,503,0.0050\n"
    )
    samples = parse_hey_csv(text, base=100.0)
    assert [s[2] for s in samples] == [503, 200]  # in completion order
    assert [s[0] for s in samples] == pytest.approx([100.007, 100.014])
    assert [s[1] for s in samples] == pytest.approx([0.002, 0.004])
    with pytest.raises(ValueError, match="hey's CSV"):
        parse_hey_csv("Summary:\n  Total: 1 secs\n")


async def test_hey_window_against_a_real_server(base: str) -> None:
    windows = HeyWindows(f"{base}/api/classify", shared("images/cat.jpg"), concurrency=2)
    samples, elapsed, cpu = await windows.next_window(0.3)
    assert len(samples) > 20
    assert {s[2] for s in samples} == {200}
    assert 0.3 <= elapsed < 5
    assert cpu > 0


async def test_both_clients_have_a_ceiling(base: str) -> None:
    image = shared("images/cat.jpg")
    url = f"{base}/api/classify"
    assert await python_ceiling(url, [image.read_bytes()], 4, 0.3) > 100
    assert await hey_ceiling(url, image, 4, 0.3) > 100
