"""gre.bulk.inputs: files, directories (flat and recursive, by suffix in any case) and lists of
paths expand to one input each, in order, spelled as the user would."""

from __future__ import annotations

from pathlib import Path

import pytest

from gre.bulk.inputs import InputError, directory_images, expand, is_image_name


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name in ("b.jpg", "a.PNG", "c.JpEg", "d.bmp", "e.webp", "notes.txt", "f.gif", "g"):
        touch(tmp_path / "top" / name)
    touch(tmp_path / "top" / "sub" / "z.jpg")
    touch(tmp_path / "top" / "sub" / "deeper" / "y.png")
    touch(tmp_path / "top" / "another" / "x.jpg")
    return tmp_path / "top"


def test_image_names_by_suffix_in_any_case() -> None:
    assert all(map(is_image_name, ["a.jpg", "a.JPG", "a.jpeg", "a.png", "a.bmp", "a.WebP"]))
    assert not any(map(is_image_name, ["a.gif", "a.tif", "a.txt", "jpg", "a.jpg.bak"]))


def test_a_directory_gives_its_images_sorted_by_name(tree: Path) -> None:
    assert expand([tree]) == [
        str(tree / n) for n in ("a.PNG", "b.jpg", "c.JpEg", "d.bmp", "e.webp")
    ]


def test_recursive_takes_each_folders_files_then_its_subfolders_by_name(tree: Path) -> None:
    found = expand([tree], recursive=True)
    assert found[:5] == expand([tree])
    assert found[5:] == [
        str(tree / "another" / "x.jpg"),
        str(tree / "sub" / "z.jpg"),
        str(tree / "sub" / "deeper" / "y.png"),
    ]


def test_files_are_inputs_whatever_their_name_and_missing_ones_too(tree: Path) -> None:
    args = [tree / "g", tree / "f.gif", tree / "missing.jpg", tree / "b.jpg", tree / "g"]
    assert expand(args) == [str(a) for a in args]  # order and duplicates kept


def test_a_list_names_paths_relative_to_its_folder(tree: Path, tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    listing = lists / "batch.LST"
    listing.write_text(
        f"# photos to classify\n\n../top/b.jpg\n  ../top/sub/z.jpg  \n{tree / 'd.bmp'}\n"
        "../top/sub\nnot-there.png\n"
    )
    assert expand([listing, tree / "e.webp"]) == [
        str(lists / "../top/b.jpg"),
        str(lists / "../top/sub/z.jpg"),
        str(tree / "d.bmp"),  # absolute: as it stands
        str(lists / "../top/sub"),  # a folder in a list is one input (its row: unreadable)
        str(lists / "not-there.png"),
        str(tree / "e.webp"),
    ]


def test_a_list_that_is_not_text_is_an_input_error(tmp_path: Path) -> None:
    listing = tmp_path / "paths.txt"
    listing.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(InputError, match=f"list of paths {listing}"):
        expand([listing])


@pytest.mark.parametrize("recursive", [False, True])
def test_a_folder_that_cannot_be_listed_raises(tmp_path: Path, recursive: bool) -> None:
    """Not an empty result: os.walk alone would hide the top folder's error."""
    with pytest.raises(FileNotFoundError):
        list(directory_images(tmp_path / "gone", recursive))
