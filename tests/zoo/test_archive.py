"""gre.zoo.archive: members out of a generated .tar.gz, verified, and nothing left when the
archive or member is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from gre.zoo.archive import ArchiveError, extract
from gre.zoo.errors import ChecksumError
from gre.zoo.manifest import Checks
from tests.zoo.generated import sha1, tarball

WORDS = b"n01440764 tench, Tinca tinca\n"


def archive(tmp_path: Path, prefix: str = "./") -> Path:
    path = tmp_path / "aux.tar.gz"
    path.write_bytes(tarball({"synset_words.txt": WORDS, "other.txt": b"x"}, prefix=prefix))
    return path


@pytest.mark.parametrize("prefix", ["./", ""])
def test_a_member_is_extracted_and_verified(tmp_path: Path, prefix: str) -> None:
    dest = tmp_path / "m" / "synset_words.txt"
    got = extract(
        archive(tmp_path, prefix), "synset_words.txt", dest, Checks(sha1=sha1(WORDS)), "w"
    )
    assert got == sha1(WORDS)
    assert dest.read_bytes() == WORDS
    assert sorted(p.name for p in dest.parent.iterdir()) == ["synset_words.txt"]


def test_a_member_with_the_wrong_checksum_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "m" / "synset_words.txt"
    with pytest.raises(ChecksumError, match=f"actual {sha1(WORDS)}"):
        extract(archive(tmp_path), "synset_words.txt", dest, Checks(sha1="3" * 40), "w")
    assert list(dest.parent.iterdir()) == []


def test_a_missing_member(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match=r"no member 'mean\.binaryproto'"):
        extract(archive(tmp_path), "mean.binaryproto", tmp_path / "x", Checks(size=1), "x")


def test_a_truncated_archive_leaves_nothing(tmp_path: Path) -> None:
    path = archive(tmp_path)
    path.write_bytes(path.read_bytes()[:40])
    dest = tmp_path / "m" / "synset_words.txt"
    with pytest.raises(ArchiveError, match=r"cannot extract 'synset_words\.txt'"):
        extract(path, "synset_words.txt", dest, Checks(sha1=sha1(WORDS)), "w")
    assert list(dest.parent.iterdir()) == []
