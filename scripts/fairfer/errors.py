"""Errors shared by the package: the user's to fix (bad configuration, bad data), told in one
paragraph, and those of fetching and unpacking datasets and weights.

A rule script that fails with one of these prints only its message on stderr (the key or file,
what was found, what is allowed, the fix); its traceback goes to the rule's log file alone.
Every other exception is an internal error and keeps its traceback on stderr too
(:func:`fairfer.logs.configure_logging`).
"""

from __future__ import annotations


class UserError(ValueError):
    """A problem with the user's configuration or data, explained in one paragraph."""


class DatasetError(UserError):
    """A dataset that cannot be read as configured."""


class MissingDataError(DatasetError, FileNotFoundError):
    """A dataset file or folder that is not where the configuration says."""


class DownloadError(RuntimeError):
    """Base class of every error raised while fetching or extracting."""


class SourceNotFoundError(DownloadError):
    """A local source (plain path or ``file://`` URL) does not exist."""


class ChecksumMismatchError(DownloadError):
    """The fetched bytes do not hash to the configured sha256."""


class UnsafeArchiveError(DownloadError):
    """An archive member would be written outside the extraction directory."""


class CredentialsError(DownloadError):
    """A source needs credentials that are missing, malformed or refused."""


class ManualSourceError(DownloadError):
    """A dataset configured as ``manual`` was asked to be fetched."""
