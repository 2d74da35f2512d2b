"""Checking a file against what the manifest knows of it, and installing it only once it
passes: a download or extraction is written to ``NAME.part`` beside its destination, checked,
then renamed onto ``NAME`` (atomic within one file system), so ``NAME`` is either absent, the
previous file, or a verified one."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from gre.model.meanfile import MeanFileError, blob_proto_to_array
from gre.zoo.errors import ChecksumError, ContentError, FetchError, SizeError
from gre.zoo.manifest import Checks

#: Bytes read at a time when hashing.
CHUNK_BYTES = 1 << 20


def part_path(dest: Path) -> Path:
    """Where ``dest`` is written before it is verified: ``dest`` + ``.part``."""
    return dest.with_name(dest.name + ".part")


def file_sha1(path: Path) -> str:
    """The SHA-1 of the file's bytes, as 40 lower-case hex digits."""
    digest = hashlib.sha1()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, checks: Checks, name: str) -> str:
    """Check ``path`` against ``checks``: size (bytes) first, then SHA-1, then the mean's
    shape; ``name`` is what messages call the file. Returns the file's SHA-1.

    Raises:
        SizeError: the size differs (both sizes named).
        ChecksumError: the SHA-1 differs (expected and actual digests named).
        ContentError: not a Caffe mean BlobProto of ``checks.mean_shape``.
    """
    size = path.stat().st_size
    if checks.size is not None and size != checks.size:
        raise SizeError(f"{name}: size {size} bytes, expected {checks.size} bytes")
    actual = file_sha1(path)
    if checks.sha1 is not None and actual != checks.sha1:
        raise ChecksumError(f"{name}: SHA-1 mismatch: expected {checks.sha1}, actual {actual}")
    if checks.mean_shape is not None:
        _verify_mean_shape(path, checks.mean_shape, name)
    return actual


def _verify_mean_shape(path: Path, shape: tuple[int, ...], name: str) -> None:
    try:
        found = blob_proto_to_array(path.read_bytes()).shape
    except MeanFileError as exc:
        raise ContentError(f"{name}: not a Caffe mean file: {exc}") from exc
    if tuple(found) != tuple(shape):
        raise ContentError(f"{name}: mean of shape {list(found)}, expected {list(shape)}")


def present_sha1(path: Path, checks: Checks) -> str | None:
    """The SHA-1 of ``path`` if it is a file that passes :func:`verify` (one to keep), else
    ``None`` (absent, or to be fetched again)."""
    if not path.is_file():
        return None
    try:
        return verify(path, checks, str(path))
    except FetchError:
        return None


def install(part: Path, dest: Path, checks: Checks, name: str) -> str:
    """Verify the finished ``part`` and rename it onto ``dest``; returns its SHA-1.

    The bytes are flushed to disk before the rename, so a crash leaves the old or the new file,
    never a torn one. On a failed check ``part`` is removed and nothing is left behind.

    Raises:
        SizeError, ChecksumError, ContentError: as :func:`verify`.
    """
    try:
        sha1 = verify(part, checks, name)
    except FetchError as exc:
        remove(part)
        raise type(exc)(f"{exc} (removed {part.name}; {dest.name} not installed)") from None
    with part.open("rb") as file:
        os.fsync(file.fileno())
    os.replace(part, dest)
    return sha1


def remove(path: Path) -> None:
    """Delete ``path`` if it exists."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
