"""One file over HTTP, resumable, installed only once verified.

The bytes go to ``DEST.part``. A ``.part`` left by an earlier run is resumed with
``Range: bytes=N-`` (RFC 9110 §14.2): a ``206 Partial Content`` whose ``Content-Range``
(§14.4) starts at N is appended; a ``200`` (the server ignores Range, as §14.2 allows) restarts
from byte 0; a ``416 Range Not Satisfiable`` (§15.5.17) whose ``bytes */LENGTH`` equals N means
the ``.part`` is already whole. Bytes are taken as sent (``Accept-Encoding: identity``,
§12.5.3), so sizes and checksums are of the file itself.

What is left on disk when it fails:

* the transfer stopped early (the connection closed before the announced length, a network
  error, a timeout, Ctrl-C): the ``.part`` is kept, and the next run resumes it;
* the transfer completed but the size, SHA-1 or content is wrong, or the server announces a
  size other than the manifest's: the ``.part`` is removed and nothing is installed.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from gre.zoo.errors import FetchError, IncompleteDownload, SizeError
from gre.zoo.manifest import Checks
from gre.zoo.progress import ProgressSink
from gre.zoo.verify import install, part_path, remove

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIED_RANGE = re.compile(r"^bytes \*/(\d+)$")


class _Restart(Exception):
    """The ``.part`` cannot be resumed (the server answered for another range): start over."""


def download(
    url: str,
    dest: Path,
    checks: Checks,
    *,
    client: httpx.Client,
    progress: ProgressSink,
    label: str | None = None,
) -> str:
    """Download ``url`` to ``dest`` (via ``dest.part``, resuming one that is there), verify it
    against ``checks`` and rename it into place. Returns its SHA-1. ``label`` names the file in
    messages and on the progress bar (default: ``dest``).

    Raises:
        IncompleteDownload: the transfer stopped early; ``dest.part`` is kept for resuming.
        SizeError, ChecksumError, ContentError: the file is not the expected one; nothing is
            left behind.
        FetchError: an HTTP error status, or no connection (a ``.part`` is kept as it was).
    """
    label = label or str(dest)
    part = part_path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset = _resumable_offset(part, checks)
    if offset == checks.size and offset:
        return install(part, dest, checks, label)  # a whole .part from an earlier run
    try:
        _transfer(url, part, offset, checks, client, progress, label)
    except _Restart:
        remove(part)
        _transfer(url, part, 0, checks, client, progress, label)
    return install(part, dest, checks, label)


def _resumable_offset(part: Path, checks: Checks) -> int:
    """Bytes of ``part`` to resume from: its size, or 0 (and the ``.part`` removed) when it is
    already longer than the expected size."""
    size = part.stat().st_size if part.is_file() else 0
    if checks.size is not None and size > checks.size:
        remove(part)
        return 0
    return size


def _transfer(
    url: str,
    part: Path,
    offset: int,
    checks: Checks,
    client: httpx.Client,
    progress: ProgressSink,
    label: str,
) -> None:
    """Fetch ``url`` into ``part`` from byte ``offset`` until the announced end.

    Raises:
        _Restart: the server answered for a range other than ``offset``.
        IncompleteDownload, SizeError, FetchError: as :func:`download`.
    """
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        with client.stream("GET", url, headers=headers) as response:
            start, total = _start_and_total(response, offset, url)
            if start is None:  # 416 for a .part that is already whole
                return
            _check_total(total, checks, part, label)
            _write_body(response, part, start, total or checks.size, progress, label)
    except httpx.TransportError as exc:
        raise _stopped(url, part, f"{type(exc).__name__}: {exc}") from exc
    expected = total if total is not None else checks.size
    received = part.stat().st_size if part.is_file() else 0
    if expected is not None and received < expected:
        raise _stopped(url, part, f"the transfer ended after {received} of {expected} bytes")


def _start_and_total(
    response: httpx.Response, offset: int, url: str
) -> tuple[int | None, int | None]:
    """From the response status and headers: the byte the body starts at (``None``: nothing to
    write, the ``.part`` is whole) and the whole file's size in bytes (``None``: unknown).

    Raises:
        _Restart: the server cannot continue from ``offset``.
        FetchError: an error status.
    """
    status = response.status_code
    if status == httpx.codes.OK:
        length = response.headers.get("Content-Length")
        return 0, int(length) if length and length.isdigit() else None
    if status == httpx.codes.PARTIAL_CONTENT and offset:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if match is None or int(match[1]) != offset:
            raise _Restart
        return offset, None if match[3] == "*" else int(match[3])
    if status == httpx.codes.REQUESTED_RANGE_NOT_SATISFIABLE and offset:
        match = _UNSATISFIED_RANGE.match(response.headers.get("Content-Range", ""))
        if match is not None and int(match[1]) == offset:
            return None, offset
        raise _Restart
    raise FetchError(f"{url}: HTTP {status} {response.reason_phrase}".rstrip())


def _check_total(total: int | None, checks: Checks, part: Path, label: str) -> None:
    """Refuse, before the body is read, a file the server announces at another size.

    Raises:
        SizeError: ``total`` is known and is not ``checks.size``; the ``.part`` is removed.
    """
    if total is not None and checks.size is not None and total != checks.size:
        remove(part)
        raise SizeError(
            f"{label}: the server announces {total} bytes, expected {checks.size} bytes "
            f"(removed {part.name}; nothing installed)"
        )


def _write_body(
    response: httpx.Response,
    part: Path,
    start: int,
    total: int | None,
    progress: ProgressSink,
    label: str,
) -> None:
    """Write the body to ``part``: appended when ``start`` is its current size, else from
    byte 0 (a ``200`` to a Range request). ``total``: the whole file's size in bytes, for the
    progress bar."""
    progress.start(label, total, start)
    try:
        with part.open("ab" if start else "wb") as out:
            for chunk in response.iter_raw():  # as received: none held back if it stops
                out.write(chunk)
                progress.advance(len(chunk))
    finally:
        progress.finish()


def _stopped(url: str, part: Path, why: str) -> FetchError:
    """The error for a transfer that stopped early: :class:`IncompleteDownload` naming the
    kept ``.part`` when there is one, else a plain :class:`FetchError`."""
    kept = part.stat().st_size if part.is_file() else 0
    if kept:
        return IncompleteDownload(
            f"{url}: {why}; kept {part} ({kept} bytes): run the same command again to resume"
        )
    remove(part)
    return FetchError(f"{url}: {why}")
