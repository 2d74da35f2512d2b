"""What can go wrong while fetching: every error ``gre fetch`` reports is a :class:`FetchError`
(exit status 1, ``gre: error: <message>``)."""

from __future__ import annotations


class FetchError(Exception):
    """A fetch failed; the message says which file, why, and what was left on disk."""


class ManifestError(FetchError):
    """The manifest is unreadable or inconsistent, or names no such model."""


class ChecksumError(FetchError):
    """A complete file's SHA-1 is not the expected one; the message names both digests."""


class SizeError(FetchError):
    """A file's size in bytes (or the size the server announces) is not the expected one."""


class IncompleteDownload(FetchError):
    """The transfer stopped before the whole file arrived; its ``.part`` file is kept so that
    the next run resumes it."""


class ContentError(FetchError):
    """A file with no published checksum fails the structural check the manifest gives it
    (e.g. a mean file that is not a Caffe BlobProto of the expected shape)."""
