"""Kaggle sources: ``kaggle://<owner>/<dataset>[/<file>][?version=<n>]`` and credentials.

Kaggle downloads use the public REST API that the official ``kaggle`` client calls,
``GET {endpoint}/api/v1/datasets/download/{owner}/{dataset}[/{file}]`` with HTTP Basic
authentication, and follow its redirect to the storage URL (the credentials are not forwarded
there; :func:`fairfer.datasets.download.fetch` does the transfer). Credentials and endpoint are
read as the official client reads them: ``KAGGLE_USERNAME`` and ``KAGGLE_KEY``, else
``kaggle.json`` in ``$KAGGLE_CONFIG_DIR`` or ``~/.kaggle``; ``KAGGLE_API_ENDPOINT`` overrides
``https://www.kaggle.com``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote

from fairfer.errors import CredentialsError, DownloadError

logger = logging.getLogger(__name__)

_KAGGLE_RE = re.compile(
    r"kaggle://(?P<owner>[^/?#]+)/(?P<dataset>[^/?#]+)(?:/(?P<file>[^?#]+))?(?:\?(?P<query>.*))?"
)


KAGGLE_DEFAULT_ENDPOINT = "https://www.kaggle.com"


KAGGLE_TOKEN_PAGE = "https://www.kaggle.com/settings"


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


def kaggle_refusal(
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
