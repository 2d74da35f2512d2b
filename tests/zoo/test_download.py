"""gre.zoo.download against a real HTTP server on 127.0.0.1: verified installs, resumption with
Range, servers that ignore it, and what is left on disk after each failure."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gre.zoo.download import download
from gre.zoo.errors import ChecksumError, FetchError, IncompleteDownload, SizeError
from gre.zoo.manifest import Checks
from gre.zoo.progress import NoProgress
from tests.zoo.fileserver import Files

BODY = bytes(range(256)) * 1000  # 256,000 bytes
SHA1 = hashlib.sha1(BODY).hexdigest()
WRONG = "0" * 40


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def fetch(server: Files, client: httpx.Client, dest: Path, checks: Checks) -> str:
    return download(server.url("/f.bin"), dest, checks, client=client, progress=NoProgress())


def part_of(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


class StopAfter(NoProgress):
    """A progress sink that raises KeyboardInterrupt (Ctrl-C) once ``limit`` bytes arrived."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.done = 0
        self.started: list[tuple[int | None, int]] = []

    def start(self, label: str, total: int | None, completed: int) -> None:
        self.started.append((total, completed))

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        if self.done >= self.limit:
            raise KeyboardInterrupt


def test_a_good_checksum_installs_the_file(
    server: Files, client: httpx.Client, tmp_path: Path
) -> None:
    server.content["/f.bin"] = BODY
    dest = tmp_path / "m" / "f.bin"
    assert fetch(server, client, dest, Checks(sha1=SHA1, size=len(BODY))) == SHA1
    assert dest.read_bytes() == BODY
    assert not part_of(dest).exists()
    assert server.ranges() == [None]
    assert server.seen[0].headers["accept-encoding"] == "identity"


def test_a_bad_checksum_names_both_digests_and_leaves_nothing(
    server: Files, client: httpx.Client, tmp_path: Path
) -> None:
    server.content["/f.bin"] = BODY
    dest = tmp_path / "f.bin"
    with pytest.raises(ChecksumError) as caught:
        fetch(server, client, dest, Checks(sha1=WRONG))
    assert f"expected {WRONG}" in str(caught.value)
    assert f"actual {SHA1}" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_a_bad_checksum_keeps_the_file_that_was_there(
    server: Files, client: httpx.Client, tmp_path: Path
) -> None:
    server.content["/f.bin"] = BODY
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"the old file")
    with pytest.raises(ChecksumError):
        fetch(server, client, dest, Checks(sha1=WRONG))
    assert dest.read_bytes() == b"the old file"
    assert not part_of(dest).exists()


def test_an_announced_size_mismatch_is_refused_before_the_body(
    server: Files, client: httpx.Client, tmp_path: Path
) -> None:
    server.content["/f.bin"] = BODY
    dest = tmp_path / "f.bin"
    with pytest.raises(SizeError, match=f"announces {len(BODY)} bytes, expected 1000 bytes"):
        fetch(server, client, dest, Checks(size=1000))
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_download_keeps_its_part_and_the_next_run_resumes(
    server: Files, client: httpx.Client, tmp_path: Path
) -> None:
    server.content["/f.bin"] = BODY
    server.cut_after = 100_000
    dest = tmp_path / "f.bin"
    with pytest.raises(IncompleteDownload, match="run the same command again to resume"):
        fetch(server, client, dest, Checks(sha1=SHA1))
    assert not dest.exists()
    assert part_of(dest).read_bytes() == BODY[:100_000]

    server.cut_after = None
    assert fetch(server, client, dest, Checks(sha1=SHA1)) == SHA1
    assert dest.read_bytes() == BODY
    assert not part_of(dest).exists()
    assert server.ranges() == [None, "bytes=100000-"]


def test_an_interrupted_download_resumes(
    server: Files, client: httpx.Client, tmp_path: Path
) -> None:
    """Ctrl-C mid-transfer: the bytes so far stay in the .part; the next run asks for the rest."""
    server.content["/f.bin"] = BODY
    dest = tmp_path / "f.bin"
    with pytest.raises(KeyboardInterrupt):
        download(server.url("/f.bin"), dest, Checks(sha1=SHA1), client=client,
                 progress=StopAfter(64 * 1024))  # fmt: skip
    kept = part_of(dest).stat().st_size
    assert 0 < kept < len(BODY)
    assert part_of(dest).read_bytes() == BODY[:kept]

    progress = StopAfter(len(BODY) + 1)
    download(server.url("/f.bin"), dest, Checks(sha1=SHA1), client=client, progress=progress)
    assert dest.read_bytes() == BODY
    assert server.ranges()[-1] == f"bytes={kept}-"
    assert progress.started == [(len(BODY), kept)]
    assert progress.done == len(BODY) - kept


def test_a_server_ignoring_range_restarts_from_zero(
    server: Files, client: httpx.Client, tmp_path: Path
) -> None:
    server.content["/f.bin"] = BODY
    server.ignore_range = True
    dest = tmp_path / "f.bin"
    part_of(dest).write_bytes(BODY[:5000])
    assert fetch(server, client, dest, Checks(sha1=SHA1)) == SHA1
    assert dest.read_bytes() == BODY  # not the first 5000 bytes twice
    assert server.ranges() == ["bytes=5000-"]


def test_a_part_that_is_already_whole(server: Files, client: httpx.Client, tmp_path: Path) -> None:
    """No size known: the Range request is answered 416 bytes */LENGTH, and the .part installed."""
    server.content["/f.bin"] = BODY
    dest = tmp_path / "f.bin"
    part_of(dest).write_bytes(BODY)
    assert fetch(server, client, dest, Checks(sha1=SHA1)) == SHA1
    assert dest.read_bytes() == BODY
    assert server.ranges() == [f"bytes={len(BODY)}-"]


def test_a_part_of_the_known_size_needs_no_request(
    server: Files, client: httpx.Client, tmp_path: Path
) -> None:
    dest = tmp_path / "f.bin"
    part_of(dest).write_bytes(BODY)
    assert fetch(server, client, dest, Checks(sha1=SHA1, size=len(BODY))) == SHA1
    assert server.seen == []


def test_a_stale_part_longer_than_the_file_is_discarded(
    server: Files, client: httpx.Client, tmp_path: Path
) -> None:
    server.content["/f.bin"] = BODY
    dest = tmp_path / "f.bin"
    part_of(dest).write_bytes(b"x" * (len(BODY) + 10))
    assert fetch(server, client, dest, Checks(sha1=SHA1, size=len(BODY))) == SHA1
    assert server.ranges() == [None]


def test_a_resumed_part_of_another_file_fails_its_checksum_and_is_removed(
    server: Files, client: httpx.Client, tmp_path: Path
) -> None:
    server.content["/f.bin"] = BODY
    dest = tmp_path / "f.bin"
    part_of(dest).write_bytes(b"y" * 1000)
    with pytest.raises(ChecksumError):
        fetch(server, client, dest, Checks(sha1=SHA1))
    assert list(tmp_path.iterdir()) == []


def test_an_http_error_names_the_status(
    server: Files, client: httpx.Client, tmp_path: Path
) -> None:
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch(server, client, tmp_path / "f.bin", Checks(sha1=SHA1))
    assert list(tmp_path.iterdir()) == []


def test_no_server_is_an_error_naming_the_url(client: httpx.Client, tmp_path: Path) -> None:
    from gre.testing import free_port

    url = f"http://127.0.0.1:{free_port()}/f.bin"
    with pytest.raises(FetchError, match="ConnectError") as caught:
        download(url, tmp_path / "f.bin", Checks(sha1=SHA1), client=client, progress=NoProgress())
    assert url in str(caught.value)
    assert list(tmp_path.iterdir()) == []
