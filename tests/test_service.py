"""The service façade in-process: a real Service, Scheduler and replica pools with fake
replicas (tests/fakes.py). Reloads under load: which model answers, what is never lost, and
what a failed reload leaves. The same through a real server and real models:
tests/http/test_reload.py."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from gre.config import Config, ConfigError, load_config
from gre.service import ReloadFailed, ReloadInProgress, Service
from tests.fakes import FakeReplica

OLD_LABELS = '["sfw", "nsfw"]'
NEW_LABELS = '["calm", "alarm"]'


def config_with(labels: str, **settings: Any) -> Config:
    """The default model (open_nsfw's files) with inline ``labels`` and ``settings``."""
    overrides = {"labels": labels, **{k: str(v) for k, v in settings.items()}}
    return load_config(None, {}, overrides)


@asynccontextmanager
async def started(
    reload_config: Callable[[], Config] | None = None, **settings: Any
) -> AsyncIterator[Service]:
    """A started Service over fake replicas, stopped afterwards."""
    FakeReplica.made.clear()
    FakeReplica.fail_start = None
    service = Service(config_with(OLD_LABELS, **settings), FakeReplica, reload_config)
    await service.start()
    try:
        yield service
    finally:
        FakeReplica.fail_start = None
        await service.stop()


async def classify(service: Service, image: bytes = b"x") -> list[dict[str, Any]]:
    pending = service.submit(service.admit(None), image, 2)
    return service.answer(await service.result(pending))


def labels_of(answer: list[dict[str, Any]]) -> set[str]:
    return {row["label"] for row in answer}


async def test_reload_switches_to_the_new_model_and_stops_the_old_replicas() -> None:
    async with started(lambda: config_with(NEW_LABELS)) as service:
        old = FakeReplica.made[-1]
        assert labels_of(await classify(service)) == {"sfw", "nsfw"}
        before = service.version
        generation = await service.reload()
        assert generation.number == 2
        assert service.version is generation.version
        assert service.version.loaded_at >= before.loaded_at
        assert old.stopped
        new = FakeReplica.made[-1]
        assert new.name == "0@cpu#2"  # never the old replica's name
        assert labels_of(await classify(service)) == {"calm", "alarm"}
        assert new.batches
        assert not old.batches[1:]
        described = service.describe()
        assert described["version"]["generation"] == 2
        assert described["replicas"][0]["name"] == "0@cpu#2"
        assert described["reload"] == {"in_progress": False, "last_error": None}
        metrics = service.metrics.render().decode()
        assert 'gre_reloads_total{outcome="ok"} 1.0' in metrics
        assert f'version="{generation.version.label}"' in metrics
        assert metrics.count("gre_model_info{") == 1  # the old version's line is gone


async def test_a_batch_running_on_the_old_model_finishes_and_keeps_its_labels() -> None:
    async with started(lambda: config_with(NEW_LABELS)) as service:
        old = FakeReplica.made[-1]
        old.gate = threading.Event()
        running = asyncio.ensure_future(classify(service, b"running"))
        while not old.started.is_set():
            await asyncio.sleep(0)
        queued = [asyncio.ensure_future(classify(service, b"queued")) for _ in range(5)]
        reload = asyncio.ensure_future(service.reload())
        while service.reloading:  # the new replica warms up while the old holds its batch
            await asyncio.sleep(0)
        assert not reload.done()  # it waits for the old replica's batch
        old.gate.set()
        await reload
        assert labels_of(await running) == {"sfw", "nsfw"}
        for answer in await asyncio.gather(*queued):
            assert labels_of(answer) in ({"sfw", "nsfw"}, {"calm", "alarm"})
        assert old.stopped
        assert old.batches[0] == [b"running"]


async def test_a_config_that_fails_to_load_leaves_the_old_model_serving() -> None:
    def broken() -> Config:
        raise ConfigError("config.toml: model.deploy: no such file: /nowhere.prototxt")

    async with started(broken) as service:
        with pytest.raises(ReloadFailed, match="no such file"):
            await service.reload()
        assert service.version.digest
        assert service.describe()["version"]["generation"] == 1
        assert "no such file" in str(service.describe()["reload"]["last_error"])
        assert labels_of(await classify(service)) == {"sfw", "nsfw"}
        assert 'gre_reloads_total{outcome="failed"} 1.0' in service.metrics.render().decode()


async def test_replicas_that_fail_to_start_fail_the_reload_not_the_service() -> None:
    fatal: list[str] = []
    async with started(lambda: config_with(NEW_LABELS), start_attempts=2) as service:
        service.on_fatal = fatal.append
        old = FakeReplica.made[-1]
        FakeReplica.fail_start = "bad caffemodel"
        with pytest.raises(ReloadFailed, match="bad caffemodel"):
            await service.reload()
        FakeReplica.fail_start = None
        assert fatal == []
        assert not old.stopped
        assert service.readiness().ready
        assert labels_of(await classify(service)) == {"sfw", "nsfw"}
        assert service.describe()["replicas"][0]["name"] == "0@cpu"


async def test_one_reload_at_a_time() -> None:
    async with started(lambda: config_with(NEW_LABELS)) as service:
        first = asyncio.ensure_future(service.reload())
        await asyncio.sleep(0)
        assert service.reloading
        with pytest.raises(ReloadInProgress):
            await service.reload()
        await first
        assert service.describe()["version"]["generation"] == 2


async def test_no_reload_while_draining() -> None:
    async with started(lambda: config_with(NEW_LABELS)) as service:
        service.drain()
        with pytest.raises(ReloadFailed, match="draining"):
            await service.reload()


async def test_stopping_during_a_reload_ends_it() -> None:
    FakeReplica.made.clear()
    service = Service(config_with(OLD_LABELS), FakeReplica, lambda: config_with(NEW_LABELS))
    await service.start()
    FakeReplica.start_gate = asyncio.Event()  # the new replica never finishes warming up
    try:
        reload = asyncio.ensure_future(service.reload())
        while len(FakeReplica.made) < 2:
            await asyncio.sleep(0)
        await service.stop()
        with pytest.raises(ReloadFailed, match="stopped during the reload"):
            await asyncio.wait_for(reload, 5)
    finally:
        FakeReplica.start_gate = None


async def test_no_reload_before_the_first_replicas_are_up() -> None:
    service = Service(config_with(OLD_LABELS), FakeReplica, lambda: config_with(NEW_LABELS))
    with pytest.raises(ReloadFailed, match="still starting"):
        await service.reload()
    await service.stop()


async def test_server_and_batching_keep_their_start_up_values() -> None:
    async with started(lambda: config_with(NEW_LABELS, port=9, max_batch_size=3)) as service:
        await service.reload()
        assert service.config.server.port == 8000
        assert service.config.batching.max_batch_size == 32
        assert service.config.model.labels == ["calm", "alarm"]


async def test_a_replica_over_max_rss_mb_is_replaced_between_batches() -> None:
    async with started(max_rss_mb=100) as service:
        first = FakeReplica.made[-1]
        first.rss_bytes = 101 * 2**20
        assert labels_of(await classify(service)) == {"sfw", "nsfw"}  # answered, then replaced
        while len(FakeReplica.made) < 2 or not service.readiness().ready:
            await asyncio.sleep(0)
        assert first.stopped
        second = FakeReplica.made[-1]
        assert await classify(service)
        assert second.batches == [[b"x"]]
        assert service.describe()["replicas"][0]["restarts"] == 1
        assert "gre_replica_restarts_total 1.0" in service.metrics.render().decode()


async def test_a_replica_under_max_rss_mb_stays() -> None:
    async with started(max_rss_mb=100) as service:
        replica = FakeReplica.made[-1]
        replica.rss_bytes = 99 * 2**20
        for _ in range(3):
            await classify(service)
        assert FakeReplica.made == [replica]
        assert not replica.stopped
