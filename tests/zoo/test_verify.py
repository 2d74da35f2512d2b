"""gre.zoo.verify: size, SHA-1 and mean-shape checks, and the install that renames a verified
.part into place or removes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from gre.zoo.errors import ChecksumError, ContentError, SizeError
from gre.zoo.manifest import Checks
from gre.zoo.verify import file_sha1, install, part_path, present_sha1, verify
from tests.zoo.generated import mean_binaryproto, sha1

DATA = b"caffe" * 1000


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_sha1_of_a_file(tmp_path: Path) -> None:
    assert file_sha1(write(tmp_path / "f", DATA)) == sha1(DATA)


def test_each_check_names_expected_and_actual(tmp_path: Path) -> None:
    path = write(tmp_path / "f", DATA)
    assert verify(path, Checks(sha1=sha1(DATA), size=len(DATA)), "f") == sha1(DATA)
    with pytest.raises(SizeError, match=f"size {len(DATA)} bytes, expected 7 bytes"):
        verify(path, Checks(size=7), "f")
    with pytest.raises(ChecksumError, match=f"expected {'1' * 40}, actual {sha1(DATA)}"):
        verify(path, Checks(sha1="1" * 40), "f")


def test_the_mean_shape_check(tmp_path: Path) -> None:
    path = write(tmp_path / "mean.binaryproto", mean_binaryproto((3, 4, 5)))
    verify(path, Checks(mean_shape=(3, 4, 5)), "mean")
    with pytest.raises(ContentError, match=r"shape \[3, 4, 5\], expected \[3, 256, 256\]"):
        verify(path, Checks(mean_shape=(3, 256, 256)), "mean")
    with pytest.raises(ContentError, match="not a Caffe mean file"):
        verify(write(tmp_path / "junk", b"\xff\xff junk"), Checks(mean_shape=(3, 4, 5)), "junk")


def test_present_sha1(tmp_path: Path) -> None:
    path = tmp_path / "f"
    assert present_sha1(path, Checks()) is None
    write(path, DATA)
    assert present_sha1(path, Checks(sha1=sha1(DATA))) == sha1(DATA)
    assert present_sha1(path, Checks(size=1)) is None


def test_install_renames_only_a_verified_part(tmp_path: Path) -> None:
    dest = tmp_path / "f"
    part = write(part_path(dest), DATA)
    assert part.name == "f.part"
    assert install(part, dest, Checks(sha1=sha1(DATA)), "f") == sha1(DATA)
    assert dest.read_bytes() == DATA
    assert not part.exists()


def test_install_removes_a_bad_part_and_keeps_the_old_file(tmp_path: Path) -> None:
    dest = write(tmp_path / "f", b"old")
    part = write(part_path(dest), DATA)
    with pytest.raises(ChecksumError, match=r"removed f\.part; f not installed"):
        install(part, dest, Checks(sha1="2" * 40), "f")
    assert not part.exists()
    assert dest.read_bytes() == b"old"
