"""The zoo's manifest: which files ``gre fetch NAME`` writes under ``--dir/NAME/``, where each
comes from, and what is known about it to verify it.

The packaged manifest is ``gre/zoo/manifest.toml``; :func:`load_manifest` reads it or any other
file of the same form (``gre fetch --manifest FILE``). Its form::

    [archives.KEY]                   # a tarball some models take members from
    url = "http://..."
    size = 17858008                  # bytes; optional, as is sha1
    [archives.KEY.members."synset_words.txt"]
    sha1 = "..."                     # what is known of the member, once extracted

    [models.NAME]
    description = "..."
    [models.NAME.files]
    "deploy.prototxt" = { url = "https://...", sha1 = "...", size = 2878 }
    "synset_words.txt" = { archive = "KEY" }     # member of the same name (or member = "...")

Each file carries what is published about it: ``sha1`` (40 hex digits; Caffe's model zoo
readme.md front matter publishes one per caffemodel), ``size`` (bytes) and, for a Caffe mean
file, ``mean_shape`` (the BlobProto's shape, e.g. ``[3, 256, 256]``). At least one is required,
so that every file fetched is verified by something.
"""

from __future__ import annotations

import difflib
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from gre.zoo.errors import ManifestError

#: A SHA-1 digest as 40 lower-case hex digits (upper case is accepted and lowered).
Sha1 = Annotated[str, Field(pattern=r"^[0-9a-f]{40}$")]

PACKAGED = "manifest.toml"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _plain_name(name: str, what: str) -> str:
    """``name`` if it is a single path component (no ``/``, ``\\``, ``.`` or ``..``), so that a
    manifest cannot write outside ``--dir``; raises :class:`ValueError` otherwise."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"{what} {name!r} must be a plain file name")
    return name


def _http_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"url {url!r} must be http:// or https://")
    return url


class Checks(_Frozen):
    """What is known of a file's content: any of its SHA-1, its size in bytes, and (for a Caffe
    mean ``.binaryproto``) its blob shape."""

    sha1: Sha1 | None = None
    size: int | None = Field(default=None, ge=0)
    mean_shape: tuple[int, ...] | None = None

    _sha1_lower = field_validator("sha1", mode="before")(_lower)

    def known(self) -> bool:
        """Whether anything at all can be checked."""
        return self.sha1 is not None or self.size is not None or self.mean_shape is not None


class KnownChecks(Checks):
    """:class:`Checks` with at least one of them given."""

    @model_validator(mode="after")
    def _something_known(self) -> KnownChecks:
        if not self.known():
            raise ValueError("give at least one of sha1, size (bytes), mean_shape to verify it by")
        return self


class Download(KnownChecks):
    """A file downloaded as is from ``url``."""

    url: str

    _url_http = field_validator("url")(_http_url)


class Member(_Frozen):
    """A file extracted from the archive ``archive`` (its member ``member``, by default the
    file's own name); what is known of it is the archive's entry for that member."""

    archive: str
    member: str | None = None


class Archive(Checks):
    """A tarball (any compression :mod:`tarfile` reads) that members are extracted from; its own
    ``sha1`` and ``size`` (bytes) are optional, its members' checks are not."""

    url: str
    members: dict[str, KnownChecks]

    _url_http = field_validator("url")(_http_url)

    @property
    def filename(self) -> str:
        """The archive's file name: the last segment of its URL's path."""
        return self.url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def _file_kind(value: Any) -> str:
    """Which kind of file spec ``value`` is: a member (it names an ``archive``) or a download."""
    names_archive = isinstance(value, Member) or (isinstance(value, dict) and "archive" in value)
    return "member" if names_archive else "download"


#: A file of a model: downloaded as is, or a member of an archive.
FileSpec = Annotated[
    Annotated[Download, Tag("download")] | Annotated[Member, Tag("member")],
    Discriminator(_file_kind),
]


class Model(_Frozen):
    """One name ``gre fetch`` knows: the files it writes into ``--dir/NAME/``."""

    description: str = ""
    files: dict[str, FileSpec]

    @field_validator("files")
    @classmethod
    def _plain_files(cls, files: dict[str, FileSpec]) -> dict[str, FileSpec]:
        for name in files:
            _plain_name(name, "file name")
        return files


class Manifest(_Frozen):
    """The whole manifest: archives and models, each member reference resolved."""

    archives: dict[str, Archive] = Field(default_factory=dict)
    models: dict[str, Model]

    @model_validator(mode="after")
    def _references_resolve(self) -> Manifest:
        for name, model in self.models.items():
            _plain_name(name, "model name")
            for filename, spec in model.files.items():
                if isinstance(spec, Member):
                    self._member_checks(name, filename, spec)
        return self

    def _member_checks(self, name: str, filename: str, spec: Member) -> Checks:
        archive = self.archives.get(spec.archive)
        if archive is None:
            raise ValueError(f"models.{name}: {filename!r} names no archive {spec.archive!r}")
        member = spec.member or filename
        if member not in archive.members:
            raise ValueError(
                f"models.{name}: {filename!r}: archive {spec.archive!r} lists no member {member!r}"
            )
        return archive.members[member]

    def model(self, name: str) -> Model:
        """The model called ``name``.

        Raises:
            ManifestError: no such name (the message suggests the nearest and lists them all).
        """
        if name in self.models:
            return self.models[name]
        near = difflib.get_close_matches(name, self.models, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        known = ", ".join(sorted(self.models))
        raise ManifestError(f"unknown model {name!r}: {hint}known: {known} (or give a URL)")

    def checks(self, model: str, filename: str) -> Checks:
        """What is known of ``filename`` of ``model``: its own checks for a download, its
        archive member's for a member."""
        spec = self.models[model].files[filename]
        if isinstance(spec, Member):
            return self._member_checks(model, filename, spec)
        return spec


def parse_manifest(data: dict[str, Any], source: str) -> Manifest:
    """Validate a parsed manifest.

    Raises:
        ManifestError: the data is not a valid manifest; the message names ``source`` and each
            bad key's path.
    """
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
        raise ManifestError(f"{source}: invalid manifest: {problems}") from exc


def load_manifest(path: Path | None = None) -> Manifest:
    """The manifest in TOML file ``path``, or the one packaged with gre when ``None``.

    Raises:
        ManifestError: the file cannot be read, is not TOML, or is not a valid manifest.
    """
    try:
        if path is None:
            source = f"gre/zoo/{PACKAGED}"
            text = resources.files("gre.zoo").joinpath(PACKAGED).read_text(encoding="utf-8")
        else:
            source = str(path)
            text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ManifestError(f"{source}: cannot read the manifest: {exc}") from exc
    return parse_manifest(data, source)
