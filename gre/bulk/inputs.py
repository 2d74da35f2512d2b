"""What ``gre classify PATH...`` classifies: each argument expanded to image paths, in order.

* A file is one input, whatever its name (a file that is not an image becomes a row with
  the error), except a list (below).
* A directory: the image files in it (:data:`IMAGE_SUFFIXES`, case-insensitive), sorted by
  name; with ``recursive``, those of every folder below too, each folder's files before its
  subfolders', subfolders by name. Symbolic links to folders are not followed (no cycles).
* A list, a file named ``*.txt`` or ``*.lst``: one path per line, relative to the list's own
  folder unless absolute; blank lines and lines starting with ``#`` are skipped. Each line is
  one input as it stands (not expanded again).
* A path that does not exist is one input too: its row says ``unreadable``.

Each input's ``sample_id`` (the rows' ``SampleID``) is the path as given or as joined here
(``DIR/NAME``, ``LISTDIR/LINE``), never resolved, so that users find their own spelling.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

#: The file names a directory contributes, lower-cased.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
#: The file names read as lists of paths, lower-cased.
LIST_SUFFIXES = frozenset({".txt", ".lst"})


class InputError(ValueError):
    """An argument that cannot be expanded: a list file that cannot be read."""


def is_image_name(name: str) -> bool:
    """Whether a directory entry named ``name`` is classified (its suffix, any case)."""
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def is_list(path: Path) -> bool:
    """Whether ``path`` names a list of paths (``.txt``/``.lst``) rather than an image."""
    return path.suffix.lower() in LIST_SUFFIXES


def directory_images(directory: Path, recursive: bool) -> Iterator[Path]:
    """The image files in ``directory`` (and, ``recursive``, below it), in the module's order.

    An unreadable subfolder contributes nothing (``os.walk`` skips it); the top folder's
    own error is raised.

    Raises:
        OSError: ``directory`` cannot be listed.
    """
    if not recursive:
        with os.scandir(directory) as entries:
            names = sorted(e.name for e in entries if e.is_file() and is_image_name(e.name))
        yield from (directory / name for name in names)
        return
    os.listdir(directory)  # the top folder's error is the caller's; os.walk would hide it
    for folder, subfolders, files in os.walk(directory):
        subfolders.sort()
        base = Path(folder)
        yield from (base / name for name in sorted(files) if is_image_name(name))


def list_entries(path: Path) -> Iterator[Path]:
    """The paths a list file names, relative to its folder unless absolute.

    Raises:
        InputError: the list cannot be read or is not UTF-8 text.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"list of paths {path}: {exc}") from exc
    for line in text.splitlines():
        entry = line.strip()
        if entry and not entry.startswith("#"):
            yield path.parent / entry


def expand(arguments: Iterable[Path], recursive: bool = False) -> list[str]:
    """Every input the arguments name, in order (duplicates kept: one row each), as the
    ``SampleID`` strings of the rows.

    Raises:
        InputError: a list file, or a directory given as an argument, cannot be read.
    """
    found: list[str] = []
    for argument in arguments:
        if argument.is_dir():
            try:
                found += map(str, directory_images(argument, recursive))
            except OSError as exc:
                raise InputError(f"directory {argument}: {exc.strerror or exc}") from exc
        elif is_list(argument) and argument.is_file():
            found += map(str, list_entries(argument))
        else:
            found.append(str(argument))
    return found
