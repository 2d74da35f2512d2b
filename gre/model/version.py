"""A model's version: what its files hold and when it was loaded, for ``/api/model``, the
``gre_model_info`` metric and the log, so that a reload can be seen to have happened."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: Hex digits of the digest shown (48 bits: ample to tell a few models apart).
DIGEST_CHARS = 12
_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class ModelVersion:
    """``digest``: SHA-256 over the model's files (deploy prototxt, caffemodel), first
    :data:`DIGEST_CHARS` hex digits; ``loaded_at``: when it was loaded, Unix time (s)."""

    digest: str
    loaded_at: float

    @property
    def loaded_at_iso(self) -> str:
        """``loaded_at`` in UTC, ISO 8601 to the second: ``"2026-12-01T22:30:05Z"``."""
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at))

    @property
    def label(self) -> str:
        """``"<digest>@<loaded_at_iso>"``, e.g. ``"3f2a9c01d4e5@2026-12-01T22:30:05Z"``: the
        metric's ``version`` label."""
        return f"{self.digest}@{self.loaded_at_iso}"


def files_digest(paths: Iterable[Path]) -> str:
    """SHA-256 over each existing file's name and bytes, in order (a file that does not
    exist, such as the null engine's caffemodel, counts by its name only), first
    :data:`DIGEST_CHARS` hex digits.

    Raises:
        OSError: a file exists but cannot be read.
    """
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        if not path.is_file():
            continue
        with path.open("rb") as file:
            while chunk := file.read(_CHUNK_BYTES):
                digest.update(chunk)
    return digest.hexdigest()[:DIGEST_CHARS]


def model_version(deploy: Path, weights: Path) -> ModelVersion:
    """The version of the model in ``deploy`` and ``weights``, loaded now (reads both files
    whole: about 0.1 s per 100 MB).

    Raises:
        OSError: a file exists but cannot be read.
    """
    return ModelVersion(files_digest((deploy, weights)), time.time())
