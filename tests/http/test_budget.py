"""The body budget (``max_inflight_body_bytes``, gre.http.budget): its accounting, and a
flood of stalled large uploads against a real server (issue 16), which must make the front end
hold no more than the budget while a photo is still answered.

tests/http/test_protocol_unit.py checks the protocol's reservations, releases and cut-offs
byte for byte, in-process."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from benchmarks.flood import (
    PHOTO_OUTCOMES,
    SLACK_BYTES,
    Flood,
    RssSampler,
    large_photo,
    metric,
    metrics_text,
    post_all,
    settled,
    steady_rss,
)
from benchmarks.httpclient import Target, fetch
from benchmarks.rss import MIB, rss_bytes
from gre.http.budget import DEFAULT_CAPACITY_BYTES, BodyBudget
from tests.http.test_workers import wait_for_workers
from tests.support import running_server, shared

#: Only catches a hang: the flood is sent in a few seconds.
HANG_S = 30.0


def test_reserve_holds_what_fits_and_nothing_else() -> None:
    budget = BodyBudget(100)
    assert (budget.capacity, budget.held, budget.free) == (100, 0, 100)
    assert budget.reserve(60)
    assert not budget.reserve(41), "41 more do not fit in the 40 left"
    assert (budget.held, budget.free) == (60, 40)
    assert budget.fits(40)
    assert not budget.fits(41)
    assert budget.reserve(40)
    assert budget.free == 0
    assert budget.reserve(0)  # nothing always fits


def test_release_gives_back_what_was_reserved() -> None:
    budget = BodyBudget(100)
    budget.reserve(70)
    budget.release(30)
    assert (budget.held, budget.free) == (40, 60)
    budget.release(40)
    assert budget.held == 0


@pytest.mark.parametrize("size", [-1, 41])
def test_release_of_more_than_is_held_or_of_a_negative_size_is_an_error(size: int) -> None:
    budget = BodyBudget(100)
    budget.reserve(40)
    with pytest.raises(ValueError, match="cannot release"):
        budget.release(size)
    assert budget.held == 40


def test_negative_reservation_and_an_empty_budget_are_errors() -> None:
    with pytest.raises(ValueError, match="cannot reserve"):
        BodyBudget(100).reserve(-1)
    with pytest.raises(ValueError, match="at least 1 byte"):
        BodyBudget(0)


def test_default_capacity_is_the_configs() -> None:
    from gre.config import ServerConfig

    assert BodyBudget().capacity == DEFAULT_CAPACITY_BYTES
    assert ServerConfig().max_inflight_body_bytes == DEFAULT_CAPACITY_BYTES


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_flood_of_stalled_uploads_holds_at_most_the_budget(
    tmp_path: Path, workers: int
) -> None:
    """150 connections each declare 16 MiB, send 12 MiB and stall (1.8 GB unbounded): at
    most 16 fit in the budget (256 MiB, the default; with 2 HTTP workers, 128 MiB each), the
    rest are refused 503 before their bodies are read; the front end's RSS (its main process
    and workers together) grows by at most the budget + 64 MiB, a photo is answered 200
    meanwhile (a held upload is cut off to make room), and every byte is released once the
    flood closes."""
    cat = shared("images/cat.jpg").read_bytes()
    settings = ("--engine", "null", "--set", "access_log=false", "--set", f"workers={workers}")
    with running_server(tmp_path, *settings) as server:
        target = Target.parse(f"{server.url}/api/classify")
        assert (await fetch(target, "POST", cat)).status == 200  # warm
        pid = server.process.pid
        pids = [pid, *(wait_for_workers(server, workers) if workers > 1 else [])]
        sampler = RssSampler(*pids)
        before = sampler.rss()
        sampler.start()
        flood = Flood(target, connections=150, declared=16 * MIB, sent=12 * MIB)
        await asyncio.wait_for(flood.start(), HANG_S)
        await steady_rss(*pids)  # the bytes queued in the sockets have been read
        photo = await asyncio.wait_for(fetch(target, "POST", cat), HANG_S)
        held = metric(await metrics_text(target), "gre_inflight_body_bytes")
        peak = await sampler.stop()
        await asyncio.sleep(0.2)  # the cut-off upload sees its connection close
        outcomes = flood.outcomes()

        assert photo.status == 200, photo
        growth = peak - before
        assert growth <= DEFAULT_CAPACITY_BYTES + SLACK_BYTES, (
            f"RSS grew {growth / MIB:.0f} MiB: {outcomes}"
        )
        assert 0 < held <= DEFAULT_CAPACITY_BYTES
        fit = DEFAULT_CAPACITY_BYTES // (16 * MIB)
        assert outcomes["held"] < fit, outcomes  # one made room for the photo
        # A refused upload's answer can be lost to the reset of the connection closed under
        # it; any answer read is the budget's 503.
        answers = {(u.status, u.error) for u in flood.uploads if u.status is not None}
        assert answers <= {(503, "too_many_bytes")}, outcomes

        await flood.close()

        async def released() -> bool:
            return metric(await metrics_text(target), "gre_inflight_body_bytes") == 0

        assert await settled(released, 10.0), "the flood's bytes were not released"
        text = await metrics_text(target)
        assert metric(text, "gre_rejected_total", reason="too_many_bytes") >= 150 - fit + 1
        assert (await fetch(target, "POST", cat)).status == 200


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_burst_of_whole_large_photos_holds_at_most_the_budget(
    tmp_path: Path, workers: int
) -> None:
    """30 valid 3.3 MiB JPEGs posted at once against a 64 MiB budget: the 19 that fit are
    queued, batched and answered, the rest refused 503 by the budget, and the main process's
    RSS grows by at most the budget + 64 MiB. Batches stop at ``max_batch_bytes`` (the image
    arena), so none crosses to the replica pickled (the tree before grew 181 and 150 MiB)."""
    photo = large_photo(3.4)
    budget = 64 * MIB
    settings = ("--engine", "null", "--set", "access_log=false", "--set", f"workers={workers}",
                "--set", f"max_inflight_body_bytes={budget}",
                "--set", f"max_body_bytes={4 * MIB}")  # fmt: skip
    with running_server(tmp_path, *settings) as server:
        target = Target.parse(f"{server.url}/api/classify")
        assert (await fetch(target, "POST", photo)).status == 200  # warm
        pid = server.process.pid
        before = rss_bytes(pid)
        assert before is not None
        sampler = RssSampler(pid)
        sampler.start()
        outcomes = await asyncio.wait_for(post_all(target, photo, 30), HANG_S)
        peak = await sampler.stop()

        growth = peak - before
        assert growth <= budget + SLACK_BYTES, f"RSS grew {growth / MIB:.0f} MiB: {outcomes}"
        assert set(outcomes) <= PHOTO_OUTCOMES, outcomes
        assert outcomes["200"] >= 9, outcomes  # what one worker's share of the budget fits
        model = await fetch(Target.parse(f"{server.url}/api/model"))
        largest = max(int(size) for size in json.loads(model.body)["batches_by_size"])
        assert 2 <= largest <= (32 * MIB) // len(photo), model.body  # max_batch_bytes' default
