"""``gre fetch``: a model name to the files its config expects under ``--dir/NAME/``, or a URL
to one file under ``--dir``.

A file already there that passes its checks is kept; one that fails them is fetched again and
replaced only once the new one is verified. Archive members (Caffe's ILSVRC-12 synset words and
mean) come out of the archive, which is downloaded once into ``--dir/.archives/`` and kept for
the next model that needs it.

``--mirror URL`` (an air-gapped copy) replaces every manifest URL of a name: each file is
fetched from ``URL/NAME/FILE``, the layout ``gre fetch`` itself writes, so a mirror is any
static HTTP server over a populated ``models/`` folder (``python -m http.server -d models``).
Archive members are then plain files there too; the checks are the manifest's, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import quote, unquote, urlsplit

import httpx
from pydantic import ValidationError

from gre import __version__
from gre.zoo.archive import extract
from gre.zoo.download import download
from gre.zoo.errors import FetchError
from gre.zoo.manifest import Archive, Checks, Download, Manifest, Member
from gre.zoo.progress import ProgressSink
from gre.zoo.verify import present_sha1, remove

#: Where archives are kept, under ``--dir``.
ARCHIVE_DIR = ".archives"

#: Seconds to wait to connect, and for each read, before a transfer counts as stopped.
TIMEOUT_S = 30.0

Action = Literal["present", "downloaded", "extracted"]


@dataclass(frozen=True)
class Fetched:
    """One file now in place: where, how it got there, and its SHA-1 (40 hex digits)."""

    path: Path
    action: Action
    sha1: str
    #: A file was there that failed its checks, and was replaced.
    replaced: bool = False


def new_client(timeout_s: float = TIMEOUT_S) -> httpx.Client:
    """The HTTP client ``gre fetch`` uses: follows redirects, ``timeout_s`` per connect and
    read, ``User-Agent: gre/VERSION``."""
    return httpx.Client(
        follow_redirects=True,
        timeout=httpx.Timeout(timeout_s),
        headers={"User-Agent": f"gre/{__version__}"},
    )


def mirror_url(mirror: str, name: str, filename: str) -> str:
    """``MIRROR/NAME/FILE``, each segment percent-encoded.

    Raises:
        FetchError: ``mirror`` is not an http:// or https:// URL.
    """
    if urlsplit(mirror).scheme not in ("http", "https"):
        raise FetchError(f"--mirror {mirror!r}: expected an http:// or https:// URL")
    return f"{mirror.rstrip('/')}/{quote(name)}/{quote(filename)}"


def fetch_model(
    name: str,
    directory: Path,
    *,
    manifest: Manifest,
    client: httpx.Client,
    progress: ProgressSink,
    mirror: str | None = None,
) -> list[Fetched]:
    """Fetch every file of model ``name`` in ``manifest`` into ``directory/name/``, in the
    manifest's order; from ``mirror`` (``MIRROR/NAME/FILE``) when given.

    Raises:
        ManifestError: no such model.
        FetchError: a file could not be fetched or verified (the files before it stay).
    """
    model = manifest.model(name)
    if mirror is not None:
        mirror_url(mirror, name, "")  # refuse a bad mirror before anything is fetched
    fetched = []
    for filename, spec in model.files.items():
        dest = directory / name / filename
        checks = manifest.checks(name, filename)
        kept = present_sha1(dest, checks)
        if kept is not None:
            fetched.append(Fetched(dest, "present", kept))
            continue
        replaced = dest.exists()
        if mirror is not None:
            url = mirror_url(mirror, name, filename)
            sha1 = download(url, dest, checks, client=client, progress=progress)
            fetched.append(Fetched(dest, "downloaded", sha1, replaced))
        elif isinstance(spec, Download):
            sha1 = download(spec.url, dest, spec, client=client, progress=progress)
            fetched.append(Fetched(dest, "downloaded", sha1, replaced))
        else:
            sha1 = _extract(manifest, spec, filename, dest, checks, directory, client, progress)
            fetched.append(Fetched(dest, "extracted", sha1, replaced))
    return fetched


def _extract(
    manifest: Manifest,
    spec: Member,
    filename: str,
    dest: Path,
    checks: Checks,
    directory: Path,
    client: httpx.Client,
    progress: ProgressSink,
) -> str:
    """Extract ``spec``'s member to ``dest``, downloading its archive first if need be; returns
    the member's SHA-1. An archive that yields no good member is removed, so that the next run
    downloads it again.

    Raises:
        FetchError: the archive could not be fetched, or its member extracted and verified.
    """
    archive = manifest.archives[spec.archive]
    path = _archive(archive, directory, client, progress)
    try:
        return extract(path, spec.member or filename, dest, checks, str(dest))
    except FetchError as exc:
        remove(path)
        again = f"removed the archive {path}: the next run fetches it again"
        raise type(exc)(f"{exc}; {again}") from None


def _archive(
    archive: Archive, directory: Path, client: httpx.Client, progress: ProgressSink
) -> Path:
    """``--dir/.archives/FILE``: kept if it is there and passes the archive's checks (or there
    are none: its members are checked anyway), else downloaded."""
    path = directory / ARCHIVE_DIR / archive.filename
    if path.is_file() and (not archive.known() or present_sha1(path, archive) is not None):
        return path
    download(archive.url, path, archive, client=client, progress=progress)
    return path


def url_filename(url: str) -> str:
    """The file name a URL is saved under: the last segment of its path, percent-decoded.

    Raises:
        FetchError: not an http(s) URL, or its path ends without a file name.
    """
    parts = urlsplit(url)
    name = PurePosixPath(unquote(parts.path)).name
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise FetchError(f"{url!r}: expected an http:// or https:// URL")
    if not name or name in (".", "..") or "\\" in name or parts.path.endswith("/"):
        raise FetchError(f"{url}: the URL's path names no file to save it as")
    return name


def sha1_checks(sha1: str | None) -> Checks:
    """:class:`Checks` for ``--sha1 HEX`` (``None``: nothing known).

    Raises:
        FetchError: not 40 hex digits.
    """
    try:
        return Checks(sha1=sha1)
    except ValidationError:
        raise FetchError(f"--sha1 {sha1!r}: expected 40 hex digits") from None


def fetch_url(
    url: str,
    directory: Path,
    *,
    sha1: str | None,
    client: httpx.Client,
    progress: ProgressSink,
) -> Fetched:
    """Fetch one file, ``url``, into ``directory/FILE`` (:func:`url_filename`), checked against
    ``sha1`` when given. Without ``sha1`` a file already there is kept as it is.

    Raises:
        FetchError: a bad URL or ``sha1``, or the download failed or did not verify.
    """
    checks = sha1_checks(sha1)
    dest = directory / url_filename(url)
    kept = present_sha1(dest, checks)  # without sha1, any file there
    if kept is not None:
        return Fetched(dest, "present", kept)
    replaced = dest.exists()
    got = download(url, dest, checks, client=client, progress=progress)
    return Fetched(dest, "downloaded", got, replaced)
