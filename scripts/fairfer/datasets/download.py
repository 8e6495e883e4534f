"""Fetch datasets and weights from a local path, a URL or Kaggle, and unpack archives safely.

A configured source is a local path, a ``file://`` URL, an ``http(s)://`` URL or
``kaggle://<owner>/<dataset>[/<file>][?version=<n>]``; ``manual`` names datasets the user places
by hand, which are never fetched. Whatever the source, the bytes go to a
``<destination>.part`` file first and are published with :func:`os.replace` only once complete
(and verified, when a sha256 is configured), so a killed job never leaves a truncated file where
the pipeline expects a finished one.

Kaggle downloads use the public REST API that the official ``kaggle`` client calls,
``GET {endpoint}/api/v1/datasets/download/{owner}/{dataset}[/{file}]`` with HTTP Basic
authentication, and follow its redirect to the storage URL (the credentials are not forwarded
there). Credentials and endpoint are read as the official client reads them:
``KAGGLE_USERNAME`` and ``KAGGLE_KEY``, else ``kaggle.json`` in ``$KAGGLE_CONFIG_DIR`` or
``~/.kaggle``; ``KAGGLE_API_ENDPOINT`` overrides ``https://www.kaggle.com``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING
from urllib.parse import parse_qs, quote, unquote, urlparse
from urllib.request import url2pathname

import requests

if TYPE_CHECKING:
    from hashlib import _Hash

logger = logging.getLogger(__name__)

_PROGRESS_INTERVAL_S = 10.0
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")
_KAGGLE_RE = re.compile(
    r"kaggle://(?P<owner>[^/?#]+)/(?P<dataset>[^/?#]+)(?:/(?P<file>[^?#]+))?(?:\?(?P<query>.*))?"
)
#: Source value of datasets the user obtains and places by hand (never fetched).
MANUAL = "manual"
KAGGLE_DEFAULT_ENDPOINT = "https://www.kaggle.com"
KAGGLE_TOKEN_PAGE = "https://www.kaggle.com/settings"


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


@dataclass(frozen=True)
class KaggleSource:
    """A parsed ``kaggle://owner/dataset[/file][?version=n]`` source."""

    owner: str
    dataset: str
    file: str | None = None
    version: int | None = None

    @property
    def page(self) -> str:
        """The dataset's web page, where its rules are accepted."""
        return f"https://www.kaggle.com/datasets/{self.owner}/{self.dataset}"

    def download_url(self, endpoint: str = KAGGLE_DEFAULT_ENDPOINT) -> str:
        """The REST download URL under ``endpoint`` (with or without its ``/api/v1``)."""
        base = endpoint.rstrip("/")
        if not base.endswith("/api/v1"):
            base += "/api/v1"
        url = f"{base}/datasets/download/{quote(self.owner)}/{quote(self.dataset)}"
        if self.file is not None:
            url += f"/{quote(self.file)}"
        if self.version is not None:
            url += f"?datasetVersionNumber={self.version}"
        return url


@dataclass(frozen=True)
class KaggleCredentials:
    """A Kaggle user name and API key, and where they were read (for error messages)."""

    username: str
    key: str
    origin: str


def parse_kaggle_source(source: str) -> KaggleSource:
    """Parse ``kaggle://<owner>/<dataset>[/<file>][?version=<n>]``.

    Raises
    ------
    ValueError
        The source is malformed (missing owner or dataset, or a bad version).
    """
    match = _KAGGLE_RE.fullmatch(source.strip())
    if match is None:
        raise ValueError(
            f"Kaggle source {source!r} is malformed; write kaggle://<owner>/<dataset>, e.g. "
            "kaggle://shuvoalok/raf-db-dataset, optionally followed by /<file> and ?version=<n>."
        )
    query = parse_qs(match["query"] or "", keep_blank_values=True)
    unknown = sorted(set(query) - {"version"})
    versions = query.get("version", [])
    if unknown or len(versions) > 1 or (versions and not versions[0].isdigit()):
        raise ValueError(
            f"Kaggle source {source!r}: the only query parameter is version=<positive integer>"
        )
    return KaggleSource(
        owner=match["owner"],
        dataset=match["dataset"],
        file=unquote(match["file"]) if match["file"] else None,
        version=int(versions[0]) if versions else None,
    )


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


def kaggle_credentials(environ: Mapping[str, str] | None = None) -> KaggleCredentials:
    """Kaggle credentials from the places the official client reads, in its order.

    ``KAGGLE_USERNAME`` and ``KAGGLE_KEY`` first; otherwise ``kaggle.json`` (``{"username":
    ..., "key": ...}``) in ``$KAGGLE_CONFIG_DIR`` when set, else in ``~/.kaggle``.

    Raises
    ------
    CredentialsError
        Neither is available or the file is malformed; the message says where to put them.
    """
    env = os.environ if environ is None else environ
    username, key = env.get("KAGGLE_USERNAME"), env.get("KAGGLE_KEY")
    if username and key:
        return KaggleCredentials(username, key, "environment variables KAGGLE_USERNAME/KAGGLE_KEY")
    config_dir = env.get("KAGGLE_CONFIG_DIR")
    path = Path(config_dir).expanduser() if config_dir else Path.home() / ".kaggle"
    path = path / "kaggle.json"
    where = (
        f"Create an API token on {KAGGLE_TOKEN_PAGE} (section API, 'Create New Token'), save "
        f"the kaggle.json it downloads as {path} and make it private (chmod 600 {path}); or "
        f"export KAGGLE_USERNAME and KAGGLE_KEY. KAGGLE_CONFIG_DIR moves the folder that holds "
        f"kaggle.json."
    )
    if not path.is_file():
        partial = " (only one of KAGGLE_USERNAME / KAGGLE_KEY is set)" if username or key else ""
        raise CredentialsError(f"No Kaggle credentials found{partial}. {where}")
    try:
        values = json.loads(path.read_text())
        username, key = values["username"], values["key"]
    except (ValueError, KeyError, TypeError) as error:
        raise CredentialsError(
            f"{path} is not a Kaggle API token file with 'username' and 'key' ({error!r}). {where}"
        ) from error
    if os.name == "posix" and path.stat().st_mode & 0o077:
        logger.warning("%s is readable by other users; run chmod 600 %s", path, path)
    return KaggleCredentials(str(username), str(key), str(path))


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
            client_error=_kaggle_error(kaggle, credentials, hint),
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


def extract_zip(
    archive: Path,
    destination: Path,
    *,
    members_prefix: Sequence[str] | None = None,
) -> Path:
    """Extract a zip archive into ``destination``, all at once or not at all.

    Members are unpacked into a hidden temporary sibling of ``destination`` that is then
    renamed into place, so a killed extraction never leaves a half-filled ``destination``.
    An existing ``destination`` is replaced. Member paths are kept as they are in the
    archive (a prefix is not stripped).

    Parameters
    ----------
    archive : Path
        The ``.zip`` file.
    destination : Path
        Directory to create (or replace) with the archive's content.
    members_prefix : Sequence[str], optional
        Extract only members whose name starts with one of these prefixes; each prefix
        must match at least one member.

    Returns
    -------
    Path
        ``destination``.

    Raises
    ------
    SourceNotFoundError
        ``archive`` does not exist.
    UnsafeArchiveError
        A member has an absolute path or climbs out with ``..``; nothing is extracted.
    DownloadError
        ``archive`` is not a valid zip, or a prefix matches no member.
    """
    archive = Path(archive)
    destination = Path(destination)
    if not archive.is_file():
        raise SourceNotFoundError(
            f"Zip archive {archive} does not exist; fetch it first or fix its configured path."
        )
    destination.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_extractions(destination)

    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                _check_member_name(info.filename, archive)
            selected = _select_members(infos, members_prefix, archive)
            staging = Path(
                tempfile.mkdtemp(
                    dir=destination.parent, prefix=f".{destination.name}.", suffix=".extracting"
                )
            )
            try:
                logger.info(
                    "Extracting %d of %d members of %s -> %s",
                    len(selected),
                    len(infos),
                    archive,
                    destination,
                )
                zf.extractall(staging, members=selected)
                _swap_into_place(staging, destination)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
    except zipfile.BadZipFile as exc:
        raise DownloadError(
            f"{archive} is not a valid zip file ({exc}). Delete it and fetch it again, and "
            f"configure its sha256 so a corrupt download is caught early."
        ) from exc
    return destination


def extract_archive(archive: Path, destination: Path, *, plain_file_name: str) -> Path:
    """Unpack a zip or tar archive (any compression) into ``destination``, atomically.

    The format is read from the content, not the name, because downloads are stored under a
    fixed name. A file that is neither (a single CSV fetched from Kaggle, say) is placed in
    ``destination`` as ``plain_file_name``. As with :func:`extract_zip`, the content goes to a
    hidden sibling first and replaces ``destination`` only when complete.

    Raises
    ------
    SourceNotFoundError
        ``archive`` does not exist.
    UnsafeArchiveError
        A member would land outside ``destination`` (absolute path, ``..``, or a link or
        device in a tar archive); nothing is extracted.
    """
    archive = Path(archive)
    destination = Path(destination)
    if not archive.is_file():
        raise SourceNotFoundError(
            f"Archive {archive} does not exist; fetch it first or fix its configured path."
        )
    if zipfile.is_zipfile(archive):
        return extract_zip(archive, destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_extractions(destination)
    staging = Path(
        tempfile.mkdtemp(
            dir=destination.parent, prefix=f".{destination.name}.", suffix=".extracting"
        )
    )
    try:
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                members = tar.getmembers()
                for member in members:
                    _check_tar_member(member, archive)
                logger.info("Extracting %d members of %s -> %s", len(members), archive, destination)
                # The members were checked above; the "data" filter (Python >= 3.11.4) also
                # drops permission bits such as setuid.
                safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(staging, members=members, **safe)
        else:
            logger.info("%s is not an archive; keeping it as %s", archive, plain_file_name)
            shutil.copyfile(archive, staging / plain_file_name)
        _swap_into_place(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination


def _check_tar_member(member: tarfile.TarInfo, archive: Path) -> None:
    _check_member_name(member.name, archive)
    if not (member.isfile() or member.isdir()):
        # Links and device files are how a hostile tar escapes its directory; datasets have none.
        raise UnsafeArchiveError(
            f"Refusing to extract {archive}: member {member.name!r} is a link or special file. "
            f"Nothing was extracted; obtain the archive from a trustworthy source."
        )


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


def _kaggle_error(
    kaggle: KaggleSource, credentials: KaggleCredentials, hint: str
) -> Callable[[int, str], DownloadError | None]:
    """Errors for the HTTP statuses Kaggle answers when a download is refused."""

    def explain(status: int, reason: str) -> DownloadError | None:
        name = f"{kaggle.owner}/{kaggle.dataset}" + (f"/{kaggle.file}" if kaggle.file else "")
        if status == 401:
            return CredentialsError(
                f"Kaggle refused the credentials of user {credentials.username!r} read from "
                f"{credentials.origin} (HTTP 401 {reason}) while downloading {name}. The key is "
                f"wrong or was revoked: create a new token on {KAGGLE_TOKEN_PAGE} and replace "
                f"them. {hint}".rstrip()
            )
        if status == 403:
            return CredentialsError(
                f"Kaggle user {credentials.username!r} (credentials from {credentials.origin}) "
                f"may not download {name} (HTTP 403 {reason}). Open {kaggle.page} while logged "
                f"in and accept the dataset's terms if it asks, or check that the key belongs "
                f"to an account with access. {hint}".rstrip()
            )
        if status == 404:
            return DownloadError(
                f"Kaggle has no dataset or file {name} (HTTP 404 {reason}); check the owner, "
                f"dataset and file names against {kaggle.page}. {hint}".rstrip()
            )
        return None

    return explain


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


def _check_member_name(name: str, archive: Path) -> None:
    # zipfile would silently strip "/" and ".." itself; an archive that needs that is either
    # malformed or hostile, and either way its layout is not what the pipeline expects.
    posix = name.replace("\\", "/")
    path = PurePosixPath(posix)
    if posix.startswith("/") or re.match(r"[A-Za-z]:", posix) or ".." in path.parts:
        raise UnsafeArchiveError(
            f"Refusing to extract {archive}: member {name!r} would be written outside the "
            f"destination (absolute path or '..'). Nothing was extracted; obtain the archive "
            f"from a trustworthy source."
        )


def _select_members(
    infos: list[zipfile.ZipInfo], members_prefix: Sequence[str] | None, archive: Path
) -> list[zipfile.ZipInfo]:
    if members_prefix is None:
        return infos
    if isinstance(members_prefix, str):
        raise TypeError(
            f"members_prefix must be a sequence of prefixes, not the string {members_prefix!r};"
            f" wrap it in a list."
        )
    for prefix in members_prefix:
        if not any(info.filename.startswith(prefix) for info in infos):
            sample = ", ".join(info.filename for info in infos[:5])
            raise DownloadError(
                f"No member of {archive} starts with {prefix!r} (first members: {sample}). Fix "
                f"the configured members prefix."
            )
    return [info for info in infos if info.filename.startswith(tuple(members_prefix))]


def _swap_into_place(staging: Path, destination: Path) -> None:
    # os.replace cannot overwrite a non-empty directory, so the old one is moved aside first;
    # destination is briefly absent but never half-filled.
    if destination.exists() or destination.is_symlink():
        old = Path(
            tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".old")
        )
        aside = old / destination.name
        os.replace(destination, aside)
        os.replace(staging, destination)
        shutil.rmtree(old)
    else:
        os.replace(staging, destination)


def _remove_stale_extractions(destination: Path) -> None:
    # Leftovers of a killed earlier run; they can be as large as the dataset itself.
    for pattern in (f".{destination.name}.*.extracting", f".{destination.name}.*.old"):
        for stale in destination.parent.glob(pattern):
            logger.warning("Removing leftover %s from an interrupted extraction", stale)
            shutil.rmtree(stale, ignore_errors=True)
