"""The image arena: a batch's encoded images cross to the replica through shared memory."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from gre.config import PreprocessConfig
from gre.messages import BatchRequest, Device, ItemError, Prediction, ReplicaSpec, SharedImages
from gre.replicas import wire
from gre.replicas.arena import ArenaReader, ImageArena
from gre.replicas.replica import Replica
from tests.support import distinct_jpegs, package_file


def test_a_batch_written_is_the_batch_read_and_the_next_overwrites_it() -> None:
    arena = ImageArena(4 * 2**20)
    reader = ArenaReader(os.dup(arena.fd))  # as the replica: its own descriptor, mapped
    try:
        first = distinct_jpegs(4)
        shared = arena.put(first)
        assert shared is not None
        assert shared.spans[0] == (0, len(first[0]))
        assert reader.images(shared) == tuple(first)
        second = [b"\xff\xd8\xff" + bytes(range(256)) * 40, b""]
        assert reader.images(arena.put(second) or SharedImages(())) == tuple(second)
    finally:
        arena.close()


def test_a_batch_larger_than_the_arena_is_not_put() -> None:
    arena = ImageArena(1000)
    try:
        assert arena.put([b"x" * 600, b"y" * 401]) is None
        assert arena.put([b"x" * 600, b"y" * 400]) is not None  # exactly full
    finally:
        arena.close()


def null_spec() -> ReplicaSpec:
    return ReplicaSpec(
        index=0,
        engine="null",
        deploy=package_file("nsfw", "deploy.prototxt"),
        weights=package_file("nsfw", "resnet_50_1by2_nsfw.caffemodel"),
        output_blob=None,
        apply_softmax=False,
        num_classes=2,
        device=Device.cpu(),
        threads=1,
        decode_threads=1,
        input_shape=(3, 224, 224),
        preprocess=PreprocessConfig().model_dump(),
    )


@pytest.mark.parametrize("arena_bytes", [32 * 2**20, 1000], ids=["arena", "inline"])
async def test_a_replica_process_classifies_through_the_arena_or_inline(
    monkeypatch: pytest.MonkeyPatch, arena_bytes: int
) -> None:
    """A real replica process, its arena sized by ``max_batch_bytes``: batches that fit go
    through the arena, one that does not goes inline; both answer in order, a bad image
    costing only itself."""
    sent: list[object] = []
    pack = wire.pack

    def spy(message: object) -> bytes:
        sent.append(message)
        return pack(message)

    monkeypatch.setattr(wire, "pack", spy)
    replica = Replica(replace(null_spec(), max_batch_bytes=arena_bytes))
    await replica.start(60)
    try:
        for _ in range(2):  # the second batch overwrites the first in the arena
            images = [*distinct_jpegs(3), b"not an image"]
            result = await replica.run(images, [1] * 4)
            assert [type(o) for o in result.outcomes] == [Prediction] * 3 + [ItemError]
    finally:
        await replica.stop()
    batches = [m for m in sent if isinstance(m, BatchRequest)]
    inline = arena_bytes < 10_000
    assert [isinstance(b.images, SharedImages) for b in batches] == [not inline] * 2
