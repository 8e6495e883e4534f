"""Fetch datasets and weights from a local path, a URL or Kaggle, and unpack archives safely.

A configured source is a local path, a ``file://`` URL, an ``http(s)://`` URL or
``kaggle://<owner>/<dataset>[/<file>][?version=<n>]``; ``manual`` names datasets the user places
by hand, which are never fetched. Whatever the source, the bytes go to a
``<destination>.part`` file first and are published with :func:`os.replace` only once complete
(and verified, when a sha256 is configured), so a killed job never leaves a truncated file where
the pipeline expects a finished one.

Kaggle sources are parsed and authenticated by :mod:`fairfer.datasets.kaggle`; archives are
unpacked by :mod:`fairfer.datasets.archives`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

import requests

from fairfer.datasets.kaggle import (
    KAGGLE_DEFAULT_ENDPOINT,
    kaggle_credentials,
    kaggle_refusal,
    parse_kaggle_source,
)
from fairfer.errors import (
    ChecksumMismatchError,
    DownloadError,
    ManualSourceError,
    SourceNotFoundError,
)

if TYPE_CHECKING:
    from hashlib import _Hash

logger = logging.getLogger(__name__)

_PROGRESS_INTERVAL_S = 10.0
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")
#: Source value of datasets the user obtains and places by hand (never fetched).
MANUAL = "manual"


def source_file_name(source: str) -> str:
    """The file name a source refers to (a Kaggle dataset's name when no file is given)."""
    match = _SCHEME_RE.match(source)
    scheme = match.group(1).lower() if match else ""
    if scheme == "kaggle":
        kaggle = parse_kaggle_source(source)
        return PurePosixPath(kaggle.file).name if kaggle.file else kaggle.dataset
    if scheme:
        return PurePosixPath(unquote(urlparse(source).path)).name or "download"
    return Path(source).name


class _TransientError(Exception):
    """A failure worth retrying (server hiccup, short body); never escapes this module."""


def sha256_of(path: Path, *, chunk_size: int = 1 << 20) -> str:
    """Return the hex sha256 digest of a file, reading it in chunks.

    Parameters
    ----------
    path : Path
        File to hash.
    chunk_size : int, optional
        Bytes read per call, to keep memory flat on multi-GB archives.

    Returns
    -------
    str
        Lower-case hex digest (64 characters).
    """
    return _hash_file(Path(path), chunk_size).hexdigest()


def fetch(
    source: str,
    destination: Path,
    *,
    sha256: str | None = None,
    hint: str = "",
    chunk_size: int = 1 << 20,
    timeout: float = 60.0,
    retries: int = 3,
    backoff: float = 1.0,
) -> Path:
    """Copy or download ``source`` to ``destination``, verifying and publishing atomically.

    Parameters
    ----------
    source : str
        Local path, ``file://`` URL, ``http(s)://`` URL or ``kaggle://<owner>/<dataset>
        [/<file>][?version=<n>]`` (credentials and endpoint as in :func:`kaggle_credentials`).
    destination : Path
        Where the file ends up; parent directories are created. An existing file there is
        replaced only after the new one is complete and verified.
    sha256 : str, optional
        Expected hex digest (case-insensitive). When given, a mismatch raises and nothing
        new is published.
    hint : str, optional
        Caller-specific advice appended to error messages, e.g. which config key sets
        ``source``.
    chunk_size : int, optional
        Bytes per read/write.
    timeout : float, optional
        Seconds to wait for the server to connect or send the next chunk.
    retries : int, optional
        Extra HTTP attempts after a connection error, a server error (5xx/429) or a
        truncated body; each one resumes from the ``.part`` file when the server allows.
    backoff : float, optional
        Seconds before the first retry, doubled for each further one.

    Returns
    -------
    Path
        ``destination``.

    Raises
    ------
    SourceNotFoundError
        The local source does not exist.
    ChecksumMismatchError
        The content does not match ``sha256``; the partial file is deleted.
    CredentialsError
        A Kaggle source without credentials, or credentials Kaggle refuses (HTTP 401/403).
    ManualSourceError
        ``source`` is ``manual``: the user places such files, the pipeline never fetches them.
    DownloadError
        Unsupported URL scheme, an HTTP client error, or retries exhausted (the ``.part``
        file is kept so that a rerun resumes).
    ValueError
        ``sha256`` is not a 64-character hex digest, a Kaggle source is malformed, or a
        numeric option is out of range.
    """
    destination = Path(destination)
    expected = _normalise_sha256(sha256, source)
    if chunk_size <= 0 or timeout <= 0 or retries < 0 or backoff < 0:
        raise ValueError(
            f"fetch({source!r}): chunk_size and timeout must be positive and retries and "
            f"backoff non-negative; got chunk_size={chunk_size}, timeout={timeout}, "
            f"retries={retries}, backoff={backoff}."
        )
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.with_name(destination.name + ".part")

    if source.strip() == MANUAL:
        raise ManualSourceError(
            f"{destination} comes from a source marked 'manual', which the pipeline does not "
            f"fetch: obtain the file yourself and place it where the configuration says. "
            f"{hint}".rstrip()
        )
    match = _SCHEME_RE.match(source)
    scheme = match.group(1).lower() if match else ""
    download = {
        "part": part,
        "hint": hint,
        "chunk_size": chunk_size,
        "timeout": timeout,
        "retries": retries,
        "backoff": backoff,
    }
    if scheme in ("http", "https"):
        actual = _download(source, **download)
    elif scheme == "kaggle":
        kaggle = parse_kaggle_source(source)
        credentials = kaggle_credentials()
        endpoint = os.environ.get("KAGGLE_API_ENDPOINT") or KAGGLE_DEFAULT_ENDPOINT
        actual = _download(
            kaggle.download_url(endpoint),
            auth=(credentials.username, credentials.key),
            client_error=kaggle_refusal(kaggle, credentials, hint),
            **download,
        )
    elif scheme in ("", "file"):
        actual = _copy(_local_path(source), part, source=source, hint=hint, chunk_size=chunk_size)
    else:
        raise DownloadError(
            f"Unsupported source {source!r} for {destination}: only local paths, file://, "
            f"http(s):// and kaggle:// URLs are supported. Download it by hand and point the "
            f"source at the local file. {hint}".rstrip()
        )

    if expected is None:
        logger.warning(
            "No sha256 configured for %s; fetched content has sha256 %s. Configure it to make "
            "reruns reproducible and to catch a changed or corrupt download.",
            source,
            actual,
        )
    elif actual != expected:
        part.unlink(missing_ok=True)
        raise ChecksumMismatchError(
            f"sha256 mismatch for {source} (fetched for {destination}): expected {expected}, "
            f"got {actual}. The partial download was deleted and {destination} was not "
            f"written. If the new file is the one you want, update the configured sha256 to "
            f"{actual}; otherwise re-download from a trustworthy source. {hint}".rstrip()
        )
    os.replace(part, destination)
    logger.info("Fetched %s -> %s (sha256 %s)", source, destination, actual)
    return destination


def _normalise_sha256(sha256: str | None, source: str) -> str | None:
    if sha256 is None:
        return None
    expected = sha256.strip().lower()
    if not _SHA256_RE.fullmatch(expected):
        raise ValueError(
            f"sha256 {sha256!r} configured for {source} is not a 64-character hex digest; "
            f"fix the value or remove it to skip verification."
        )
    return expected


def _local_path(source: str) -> Path:
    if not source.lower().startswith("file://"):
        return Path(source).expanduser()
    parsed = urlparse(source)
    if parsed.netloc not in ("", "localhost"):
        raise DownloadError(
            f"file:// URL {source!r} names host {parsed.netloc!r}; only local files are "
            f"supported. Use file:///absolute/path (three slashes)."
        )
    return Path(url2pathname(unquote(parsed.path)))


def _copy(src: Path, part: Path, *, source: str, hint: str, chunk_size: int) -> str:
    if not src.exists():
        raise SourceNotFoundError(
            f"Source file {src} does not exist (configured source {source!r}). Place the file "
            f"at that path or point the configured source at where it is. {hint}".rstrip()
        )
    if not src.is_file():
        raise DownloadError(
            f"Source {src} is not a regular file; point the configured source at the file "
            f"itself. {hint}".rstrip()
        )
    total = src.stat().st_size
    logger.info("Copying %s -> %s (%s)", src, part, _format_bytes(total))
    hasher = hashlib.sha256()
    # A local copy is cheap to redo, so any leftover .part is overwritten rather than resumed.
    with src.open("rb") as inp, part.open("wb") as out:
        _copy_chunks(
            iter(lambda: inp.read(chunk_size), b""), out, hasher, label=str(src), total=total
        )
    return hasher.hexdigest()


def _download(
    url: str,
    part: Path,
    *,
    hint: str,
    chunk_size: int,
    timeout: float,
    retries: int,
    backoff: float,
    auth: tuple[str, str] | None = None,
    client_error: Callable[[int, str], DownloadError | None] | None = None,
) -> str:
    attempt = 0
    with requests.Session() as session:
        # requests drops these credentials when a redirect leaves the host (Kaggle's storage).
        session.auth = auth
        while True:
            try:
                return _download_attempt(
                    session,
                    url,
                    part,
                    hint=hint,
                    chunk_size=chunk_size,
                    timeout=timeout,
                    client_error=client_error,
                )
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
                _TransientError,
            ) as exc:
                attempt += 1
                if attempt > retries:
                    kept = (
                        f"The partial download is kept at {part}; rerun to resume from it. "
                        if part.exists()
                        else ""
                    )
                    raise DownloadError(
                        f"Gave up downloading {url} after {attempt} attempt(s): {exc}. {kept}"
                        f"Check the URL and your network, or raise the retries. {hint}".rstrip()
                    ) from exc
                delay = backoff * 2 ** (attempt - 1)
                logger.warning(
                    "Download of %s failed (%s); retry %d/%d in %.1f s, resuming from %s",
                    url,
                    exc,
                    attempt,
                    retries,
                    delay,
                    _format_bytes(part.stat().st_size if part.exists() else 0),
                )
                time.sleep(delay)


def _download_attempt(
    session: requests.Session,
    url: str,
    part: Path,
    *,
    hint: str,
    chunk_size: int,
    timeout: float,
    client_error: Callable[[int, str], DownloadError | None] | None = None,
) -> str:
    offset = part.stat().st_size if part.exists() else 0
    # Compressed transfer would make byte offsets refer to the encoded stream, not the file.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    logger.info("Downloading %s -> %s (from byte %d)", url, part, offset)
    with session.get(url, headers=headers, stream=True, timeout=timeout) as response:
        status = response.status_code
        if status == 416 and offset:
            total = _parse_content_range_total(response.headers.get("Content-Range", ""))
            if total == offset:
                logger.info("%s already holds all %d bytes of %s", part, offset, url)
                return _hash_file(part, chunk_size).hexdigest()
            part.unlink()
            raise _TransientError(f"server refused to resume at byte {offset}; restarting")
        if status >= 500 or status == 429:
            raise _TransientError(f"HTTP {status} {response.reason}")
        if status not in (200, 206):
            explained = client_error(status, response.reason) if client_error else None
            if explained is not None:
                raise explained
            raise DownloadError(
                f"HTTP {status} {response.reason} for {url} (downloading to {part}). Check "
                f"that the URL is right and reachable. {hint}".rstrip()
            )

        if status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range", ""))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _TransientError(
                    f"server resumed at byte {start} instead of {offset}; restarting"
                )
            mode = "ab"
            hasher = _hash_file(part, chunk_size)
        else:
            if offset:
                logger.info("Server ignored the Range request for %s; restarting from zero", url)
            mode, hasher, start = "wb", hashlib.sha256(), 0
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None and length.isdigit() else None

        with part.open(mode) as out:
            done = _copy_chunks(
                response.iter_content(chunk_size),
                out,
                hasher,
                label=url,
                total=total,
                done=start,
            )
    # urllib3 normally raises on a short body itself; this also covers servers that close
    # the connection without a Content-Length-enforcing client in between.
    if total is not None and done != total:
        raise _TransientError(f"connection closed after {done} of {total} bytes")
    return hasher.hexdigest()


def _copy_chunks(
    chunks: Iterable[bytes],
    out: IO[bytes],
    hasher: _Hash,
    *,
    label: str,
    total: int | None,
    done: int = 0,
) -> int:
    last_log = time.monotonic()
    for chunk in chunks:
        out.write(chunk)
        hasher.update(chunk)
        done += len(chunk)
        now = time.monotonic()
        if now - last_log >= _PROGRESS_INTERVAL_S:
            last_log = now
            if total:
                logger.info(
                    "%s: %s of %s (%.0f%%)",
                    label,
                    _format_bytes(done),
                    _format_bytes(total),
                    100 * done / total,
                )
            else:
                logger.info("%s: %s", label, _format_bytes(done))
    return done


def _hash_file(path: Path, chunk_size: int) -> _Hash:
    hasher = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            hasher.update(chunk)
    return hasher


def _parse_content_range(header: str) -> tuple[int, int | None]:
    match = _CONTENT_RANGE_RE.fullmatch(header.strip())
    if match is None:
        raise _TransientError(f"unparseable Content-Range {header!r} in a 206 response")
    total = match.group(2)
    return int(match.group(1)), None if total == "*" else int(total)


def _parse_content_range_total(header: str) -> int | None:
    match = re.fullmatch(r"bytes \*/(\d+)", header.strip())
    return int(match.group(1)) if match else None


def _format_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = n / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
