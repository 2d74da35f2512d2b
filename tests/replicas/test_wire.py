"""Framing: many frames per read (FrameReader), many sends per write (FrameWriter)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gre.replicas import wire


def fed(*chunks: bytes, eof: bool = False) -> asyncio.StreamReader:
    """A stream that has received ``chunks`` (one read each at most), then EOF if asked."""
    reader = asyncio.StreamReader()
    for chunk in chunks:
        reader.feed_data(chunk)
    if eof:
        reader.feed_eof()
    return reader


async def test_every_whole_frame_of_a_read_comes_at_once() -> None:
    messages = [("head", i, b"x" * i) for i in range(5)]
    frames = wire.FrameReader(fed(b"".join(wire.pack(m) for m in messages)))
    assert await frames.read() == messages


async def test_a_frame_split_over_reads_comes_when_whole() -> None:
    first, second = wire.pack(("a", b"1" * 1000)), wire.pack(("b", 2))
    data = first + second
    reader = asyncio.StreamReader()
    frames = wire.FrameReader(reader)
    reader.feed_data(data[:3])  # not even the length
    waiting = asyncio.ensure_future(frames.read())
    await asyncio.sleep(0)
    assert not waiting.done()
    reader.feed_data(data[3:500])  # the length, part of the pickle
    await asyncio.sleep(0)
    assert not waiting.done()
    reader.feed_data(data[500 : len(first) + 2])  # the first whole, two bytes of the next
    assert await waiting == [("a", b"1" * 1000)]
    reader.feed_data(data[len(first) + 2 :])
    assert await frames.read() == [("b", 2)]


async def test_a_frame_larger_than_one_read_is_assembled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "READ_BYTES", 1000)
    message = ("head", 1, bytes(range(256)) * 100)
    frames = wire.FrameReader(fed(wire.pack(message) + wire.pack(("gone", 1))))
    assert await frames.read() == [message, ("gone", 1)]


async def test_the_peer_closing_mid_frame_or_between_frames_is_an_incomplete_read() -> None:
    whole = wire.pack(("gone", 7))
    frames = wire.FrameReader(fed(whole, whole[:5], eof=True))
    assert await frames.read() == [("gone", 7)]
    with pytest.raises(asyncio.IncompleteReadError) as cut:
        await frames.read()
    assert cut.value.partial == whole[:5]
    with pytest.raises(asyncio.IncompleteReadError):
        await wire.FrameReader(fed(eof=True)).read()


class RecordingWriter:
    """The part of asyncio.StreamWriter FrameWriter uses, recording each write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closing


async def test_sends_of_one_loop_iteration_leave_in_one_write() -> None:
    writer = RecordingWriter()
    frames = wire.FrameWriter(writer)  # type: ignore[arg-type]
    sent: list[Any] = [("response", i, 200, [], b"{}") for i in range(3)]
    for message in sent:
        frames.send(message)
    assert writer.writes == []  # nothing until the iteration ends
    await asyncio.sleep(0)
    assert len(writer.writes) == 1
    assert await wire.FrameReader(fed(writer.writes[0])).read() == sent
    frames.send(("more", 4))
    await asyncio.sleep(0)
    assert writer.writes[1] == wire.pack(("more", 4))


async def test_flush_writes_at_once_and_a_closing_stream_gets_nothing() -> None:
    writer = RecordingWriter()
    frames = wire.FrameWriter(writer)  # type: ignore[arg-type]
    frames.send(("held", 10))
    frames.flush()
    assert writer.writes == [wire.pack(("held", 10))]
    await asyncio.sleep(0)  # the flush it had scheduled finds nothing left
    assert len(writer.writes) == 1
    writer.closing = True
    frames.send(("gone", 1))
    await asyncio.sleep(0)
    assert len(writer.writes) == 1
