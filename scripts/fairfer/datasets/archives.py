"""Unpack zip and tar archives safely and atomically.

Members are checked before anything is written (no absolute paths, no ``..``, no links out of
the destination), extracted into a staging folder next to the destination and swapped into
place in one rename, so a killed job never leaves a half-unpacked dataset.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from fairfer.errors import DownloadError, SourceNotFoundError, UnsafeArchiveError

logger = logging.getLogger(__name__)


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
