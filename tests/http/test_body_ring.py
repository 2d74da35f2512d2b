"""The body ring (gre.http.body_ring): both sides in one process, over a real memfd."""

from __future__ import annotations

import os

import pytest

from gre.http.body_ring import INLINE_BELOW, RingReader, RingWriter


def ring(size: int) -> tuple[RingWriter, RingReader]:
    """A reader of ``size`` bytes and a writer on a duplicate of its descriptor, as the
    worker maps it after spawn."""
    reader = RingReader(size)
    assert reader.fd is not None
    writer = RingWriter(os.dup(reader.fd))
    reader.sent()
    return writer, reader


def body(length: int, fill: int) -> bytes:
    return bytes([fill]) * length


def test_bodies_are_read_back_in_the_order_written() -> None:
    writer, reader = ring(4 * INLINE_BELOW)
    bodies = [body(INLINE_BELOW, 1), body(INLINE_BELOW + 5, 2)]
    places = [writer.put(b) for b in bodies]
    assert places == [(0, INLINE_BELOW), (INLINE_BELOW, INLINE_BELOW + 5)]
    assert [reader.take(*p) for p in places if p is not None] == bodies
    assert reader.position == 2 * INLINE_BELOW + 5


def test_a_small_body_and_one_larger_than_the_ring_cross_inline() -> None:
    writer, _ = ring(2 * INLINE_BELOW)
    assert writer.put(body(INLINE_BELOW - 1, 1)) is None
    assert writer.put(body(2 * INLINE_BELOW + 1, 1)) is None
    assert writer.put(body(2 * INLINE_BELOW, 1)) == (0, 2 * INLINE_BELOW)


def test_a_body_waits_for_room_until_the_reader_says_how_far_it_read() -> None:
    size = 3 * INLINE_BELOW
    writer, reader = ring(size)
    first = writer.put(body(INLINE_BELOW, 1))
    second = writer.put(body(INLINE_BELOW, 2))
    assert first is not None
    assert second is not None
    assert writer.put(body(2 * INLINE_BELOW, 3)) is None  # only one third is free
    assert reader.take(*first) == body(INLINE_BELOW, 1)
    writer.taken(reader.position)
    # Free now: the last third and the first; a body of two thirds does not fit in either
    # without running off the end, and wrapping would overwrite the unread second.
    assert writer.put(body(2 * INLINE_BELOW, 3)) is None
    third = writer.put(body(INLINE_BELOW, 3))
    assert third == (2 * INLINE_BELOW, INLINE_BELOW)
    assert reader.take(*second) == body(INLINE_BELOW, 2)
    assert reader.take(*third) == body(INLINE_BELOW, 3)
    writer.taken(reader.position)
    writer.taken(INLINE_BELOW)  # an older ack arriving late frees nothing back
    assert writer.put(body(2 * INLINE_BELOW, 4)) == (size, 2 * INLINE_BELOW)


def test_a_body_that_would_run_off_the_end_starts_over_at_the_beginning() -> None:
    size = 3 * INLINE_BELOW
    writer, reader = ring(size)
    for fill in (1, 2):
        place = writer.put(body(INLINE_BELOW + INLINE_BELOW // 2, fill))
        assert place is not None
        reader.take(*place)
    writer.taken(reader.position)
    wrapped = writer.put(body(INLINE_BELOW, 9))
    assert wrapped == (size, INLINE_BELOW)  # position 3 thirds: offset 0, the end skipped
    assert reader.take(*wrapped) == body(INLINE_BELOW, 9)
    assert reader.position == size + INLINE_BELOW


def test_a_ring_read_to_its_head_has_room_for_any_body_it_holds() -> None:
    """Wherever the head is: a worker waits for room for a body the ring holds, so an empty
    ring that still refused it (7 of 8 parts with the head at part 2) would hold it back
    for ever."""
    size = 8 * INLINE_BELOW
    writer, reader = ring(size)
    first = writer.put(body(2 * INLINE_BELOW, 1))
    assert first is not None
    large = body(7 * INLINE_BELOW, 2)
    assert writer.holds(len(large))
    assert writer.put(large) is None  # the first is unread: no room yet
    reader.take(*first)
    writer.taken(reader.position)
    place = writer.put(large)
    assert place == (size, len(large))  # past the end: at offset 0
    assert reader.take(*place) == large
    assert not writer.holds(INLINE_BELOW - 1)
    assert not writer.holds(size + 1)


def test_the_readers_map_is_read_only_and_closes() -> None:
    writer, reader = ring(INLINE_BELOW)
    assert reader.fd is None
    with pytest.raises(TypeError):
        reader._map[0:1] = b"x"
    reader.close()
    writer.close()
