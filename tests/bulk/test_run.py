"""gre.bulk.run in this process, over a real Service (open_nsfw's engine in replica
processes): answers come back in input order and equal the engine's called directly, the
scheduler batches them, a queue smaller than the window is waited out rather than failed,
deadlines become rows, and an unknown blob is refused before any replica starts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gre.bulk.run import BlobError, Item, Summary, classify_all, run_service
from gre.config import Config, load_config
from gre.messages import ItemError, Prediction
from gre.model.classifier import Classifier
from gre.offline import build_classifier
from gre.service import Service
from tests.support import distinct_jpegs


def config(**settings: Any) -> Config:
    return load_config(None, {}, {k: str(v) for k, v in settings.items()})


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i, data in enumerate(distinct_jpegs(12)):
        path = folder / f"{i:02d}.jpg"
        path.write_bytes(data)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def direct() -> Iterator[Classifier]:
    classifier = build_classifier(load_config(None, {}))
    yield classifier
    classifier.close()


async def test_a_full_queue_is_waited_out_and_answers_keep_input_order(
    photos: list[str], direct: Classifier
) -> None:
    # A window of 12 over a queue of 2: submissions meet QueueFull and must wait.
    service = Service(config(max_batch_size=2, max_queue_size=2, max_queue_delay_ms=50))
    items: list[Item] = []
    await service.start()
    try:
        summary = await classify_all(service, photos, 2, (), items.append, window=12)
        batches = dict(service.describe()["batches_by_size"])
    finally:
        await service.stop()
    assert [item.sample_id for item in items] == photos
    assert (summary.images, summary.errors) == (12, 0)
    assert summary.images_per_s > 0
    assert batches.get("2", 0) >= 1, batches  # batched by the scheduler, not one by one
    for item in items:
        want = direct.classify([Path(item.sample_id).read_bytes()], [2]).outcomes[0]
        assert isinstance(item.outcome, Prediction)
        assert isinstance(want, Prediction)
        assert item.outcome.indices == want.indices
        assert item.outcome.confidences == pytest.approx(want.confidences, abs=1e-5)
        assert item.labels == ["sfw", "nsfw"]


async def test_a_passed_deadline_is_a_row_not_an_abort(photos: list[str]) -> None:
    items: list[Item] = []
    # 1 ms: less than any forward of open_nsfw takes, so every image misses its deadline.
    summary = await run_service(config(timeout_ms=1), photos[:3], 1, (), items.append)
    assert [item.sample_id for item in items] == photos[:3]
    assert summary.errors == 3
    for item in items:
        assert isinstance(item.outcome, ItemError)
        assert item.outcome.code == "deadline_exceeded"
        assert "--set timeout_ms" in item.outcome.message
    assert summary.startup_s > 0


async def test_an_unknown_blob_is_refused_before_anything_starts(photos: list[str]) -> None:
    started: list[bool] = []
    with pytest.raises(BlobError, match=r"not a blob of this net: fc7, pool5; its blobs: data,"):
        await run_service(
            config(), photos, 1, ("pool", "fc7", "pool5"), lambda item: None,
            before_start=lambda: started.append(True),
        )  # fmt: skip
    assert started == []


def test_the_summary_line() -> None:
    assert Summary(200, 3, 8.0).line() == "classified 200 images in 8.0 s: 25.0 images/s (3 errors)"
    assert Summary(0, 0, 0.0).images_per_s == 0.0
