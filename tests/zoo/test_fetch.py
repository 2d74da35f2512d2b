"""gre.zoo.fetch: a name of a small manifest pointing at a real server on 127.0.0.1 fetches its
downloads and archive members into --dir/NAME/; present files are kept; --mirror fetches
MIRROR/NAME/FILE; a URL fetches one file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gre.zoo.errors import ChecksumError, FetchError, ManifestError
from gre.zoo.fetch import ARCHIVE_DIR, fetch_model, fetch_url, mirror_url, url_filename
from gre.zoo.manifest import Manifest, parse_manifest
from gre.zoo.progress import NoProgress
from tests.zoo.fileserver import Files
from tests.zoo.generated import (
    DEPLOY,
    FILES,
    WEIGHTS,
    WORDS,
    manifest_data,
    serve_origin,
    sha1,
)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


@pytest.fixture
def manifest(server: Files) -> Manifest:
    serve_origin(server)
    return parse_manifest(manifest_data(server.base), "test")


def fetch(
    name: str, directory: Path, manifest: Manifest, client: httpx.Client, mirror: str | None = None
) -> list[Any]:
    return fetch_model(name, directory, manifest=manifest, client=client, progress=NoProgress(),
                       mirror=mirror)  # fmt: skip


def all_files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def test_a_name_fetches_its_files_into_dir_name(
    server: Files, manifest: Manifest, client: httpx.Client, tmp_path: Path
) -> None:
    fetched = fetch("tiny", tmp_path, manifest, client)
    assert [(f.path.name, f.action) for f in fetched] == [
        ("deploy.prototxt", "downloaded"), ("tiny.caffemodel", "downloaded"),
        ("synset_words.txt", "extracted"), ("imagenet_mean.binaryproto", "extracted"),
    ]  # fmt: skip
    for name, data in FILES.items():
        assert (tmp_path / "tiny" / name).read_bytes() == data
    assert [f.sha1 for f in fetched] == [sha1(d) for d in FILES.values()]
    assert all_files(tmp_path) == sorted(
        [f"tiny/{n}" for n in FILES] + [f"{ARCHIVE_DIR}/aux.tar.gz"]
    )
    assert [s.path for s in server.seen] == [
        "/gh/deploy.prototxt", "/dl/tiny.caffemodel", "/dl/aux.tar.gz",
    ]  # fmt: skip


def test_present_files_are_kept_without_a_request(
    server: Files, manifest: Manifest, client: httpx.Client, tmp_path: Path
) -> None:
    fetch("tiny", tmp_path, manifest, client)
    requests = len(server.seen)
    again = fetch("tiny", tmp_path, manifest, client)
    assert [f.action for f in again] == ["present"] * 4
    assert len(server.seen) == requests


def test_the_kept_archive_serves_the_next_model(
    server: Files, manifest: Manifest, client: httpx.Client, tmp_path: Path
) -> None:
    fetch("tiny", tmp_path, manifest, client)
    requests = len(server.seen)
    fetched = fetch("words", tmp_path, manifest, client)
    assert [f.action for f in fetched] == ["extracted"]
    assert (tmp_path / "words" / "synset_words.txt").read_bytes() == WORDS
    assert len(server.seen) == requests


def test_a_present_file_that_fails_its_checks_is_replaced(
    server: Files, manifest: Manifest, client: httpx.Client, tmp_path: Path
) -> None:
    fetch("tiny", tmp_path, manifest, client)
    (tmp_path / "tiny" / "tiny.caffemodel").write_bytes(b"corrupt")
    fetched = fetch("tiny", tmp_path, manifest, client)
    assert [(f.action, f.replaced) for f in fetched][1] == ("downloaded", True)
    assert (tmp_path / "tiny" / "tiny.caffemodel").read_bytes() == WEIGHTS


def test_a_mirror_serves_name_slash_file(
    server: Files, manifest: Manifest, client: httpx.Client, tmp_path: Path
) -> None:
    server.content.clear()  # the origin is gone: air-gapped
    server.content.update({f"/mirror/tiny/{name}": data for name, data in FILES.items()})
    fetched = fetch("tiny", tmp_path, manifest, client, mirror=server.url("/mirror/"))
    assert [f.action for f in fetched] == ["downloaded"] * 4
    assert [s.path for s in server.seen] == [f"/mirror/tiny/{name}" for name in FILES]
    assert all_files(tmp_path) == sorted(f"tiny/{n}" for n in FILES)


def test_a_mirror_file_is_checked_as_the_origin_would_be(
    server: Files, manifest: Manifest, client: httpx.Client, tmp_path: Path
) -> None:
    server.content.update({f"/mirror/tiny/{name}": data for name, data in FILES.items()})
    server.content["/mirror/tiny/synset_words.txt"] = WORDS.upper()
    with pytest.raises(
        ChecksumError, match=f"expected {sha1(WORDS)}, actual {sha1(WORDS.upper())}"
    ):
        fetch("tiny", tmp_path, manifest, client, mirror=server.url("/mirror"))
    assert not (tmp_path / "tiny" / "synset_words.txt").exists()
    assert not (tmp_path / "tiny" / "synset_words.txt.part").exists()


def test_a_bad_mirror_is_refused_before_any_request(
    server: Files, manifest: Manifest, client: httpx.Client, tmp_path: Path
) -> None:
    with pytest.raises(FetchError, match="--mirror"):
        fetch("tiny", tmp_path, manifest, client, mirror="/srv/models")
    assert server.seen == []


def test_a_member_with_the_wrong_checksum_removes_the_archive(
    server: Files, client: httpx.Client, tmp_path: Path
) -> None:
    serve_origin(server)
    manifest = parse_manifest(manifest_data(server.base, words_sha1="4" * 40), "test")
    with pytest.raises(ChecksumError, match="removed the archive") as caught:
        fetch("words", tmp_path, manifest, client)
    assert f"expected {'4' * 40}, actual {sha1(WORDS)}" in str(caught.value)
    assert all_files(tmp_path) == []


def test_an_unknown_name(manifest: Manifest, client: httpx.Client, tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="did you mean 'tiny'"):
        fetch("tin", tmp_path, manifest, client)


def test_a_url_fetches_one_file(server: Files, client: httpx.Client, tmp_path: Path) -> None:
    serve_origin(server)
    url = server.url("/dl/tiny.caffemodel")
    got = fetch_url(url, tmp_path, sha1=sha1(WEIGHTS).upper(), client=client, progress=NoProgress())
    assert (got.path, got.action, got.sha1) == (
        tmp_path / "tiny.caffemodel",
        "downloaded",
        sha1(WEIGHTS),
    )
    again = fetch_url(url, tmp_path, sha1=sha1(WEIGHTS), client=client, progress=NoProgress())
    assert again.action == "present"
    assert len(server.seen) == 1


def test_a_url_with_a_wrong_sha1_leaves_nothing(
    server: Files, client: httpx.Client, tmp_path: Path
) -> None:
    serve_origin(server)
    with pytest.raises(ChecksumError, match=f"actual {sha1(DEPLOY)}"):
        fetch_url(server.url("/gh/deploy.prototxt"), tmp_path, sha1="5" * 40, client=client,
                  progress=NoProgress())  # fmt: skip
    assert all_files(tmp_path) == []


@pytest.mark.parametrize(
    ("url", "message"),
    [("http://h/dir/", "names no file"), ("ftp://h/f.bin", "http:// or https://")],
)
def test_a_url_that_names_no_file(url: str, message: str) -> None:
    with pytest.raises(FetchError, match=message):
        url_filename(url)


def test_url_filename_and_mirror_url() -> None:
    assert url_filename("https://h/a/b%20c.caffemodel?x=1") == "b c.caffemodel"
    assert mirror_url("http://m:8080/zoo/", "squeezenet_v1.1", "a b") == (
        "http://m:8080/zoo/squeezenet_v1.1/a%20b"
    )


def test_a_bad_sha1_option(client: httpx.Client, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="40 hex digits"):
        fetch_url("http://h/f", tmp_path, sha1="abc", client=client, progress=NoProgress())
