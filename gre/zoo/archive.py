"""Members out of a tarball (any compression :mod:`tarfile` reads: gzip, bzip2, xz), each
written to ``DEST.part``, verified, and renamed into place (:func:`gre.zoo.verify.install`).

Only the named member is read, and it is written under the name the manifest gives, never the
archive's own path, so an archive cannot write outside ``--dir``. Member names match with or
without a leading ``./`` (``tar -czf x.tar.gz .`` writes ``./synset_words.txt``).
"""

from __future__ import annotations

import shutil
import tarfile
import zlib
from pathlib import Path

from gre.zoo.errors import FetchError
from gre.zoo.manifest import Checks
from gre.zoo.verify import install, part_path, remove


class ArchiveError(FetchError):
    """The archive cannot be read, or lacks the member, or the member is not a regular file."""


def _normal(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def _find(tar: tarfile.TarFile, member: str, archive: Path) -> tarfile.TarInfo:
    """The regular-file entry of ``tar`` named ``member``.

    Raises:
        ArchiveError: no such entry, or it is a link, directory or device.
    """
    for info in tar:
        if _normal(info.name) == _normal(member):
            if not info.isfile():
                raise ArchiveError(f"{archive}: {member!r} is not a regular file")
            return info
    raise ArchiveError(f"{archive}: no member {member!r}")


def extract(archive: Path, member: str, dest: Path, checks: Checks, label: str) -> str:
    """Extract ``member`` of ``archive`` to ``dest``, verified against ``checks``; returns its
    SHA-1. ``label`` names ``dest`` in messages.

    Raises:
        ArchiveError: the archive is unreadable (truncated, not a tarball) or lacks the member;
            nothing is left at ``dest``.
        SizeError, ChecksumError, ContentError: the member is not the expected file; nothing is
            left at ``dest``.
    """
    part = part_path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            source = tar.extractfile(_find(tar, member, archive))
            if source is None:  # pragma: no cover - isfile() members always have data
                raise ArchiveError(f"{archive}: {member!r} has no data")
            with source, part.open("wb") as out:
                shutil.copyfileobj(source, out)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        remove(part)
        raise ArchiveError(f"{archive}: cannot extract {member!r}: {exc}") from exc
    except BaseException:
        remove(part)
        raise
    return install(part, dest, checks, label)
