"""Fetch one dataset's archive (path, file://, http(s):// or kaggle://), verify it, unpack it."""

import logging
from pathlib import Path

from fairfer.datasets.archives import extract_archive
from fairfer.datasets.download import fetch, source_file_name
from fairfer.errors import DownloadError

logger = logging.getLogger(__name__)


def download(
    dataset: str,
    source: str,
    sha256: str | None,
    archive: Path,
    root: Path,
    *,
    archive_root: str,
    layout: str,
) -> Path:
    """Fetch ``source`` to ``archive``, unpack it into ``root`` and check ``archive_root``.

    Returns the folder the dataset's adapter reads (``root / archive_root``).
    """
    hint = (
        f"Config keys datasets.{dataset}.source and datasets.{dataset}.sha256 say where the "
        f"archive comes from; it must hold {layout}."
    )
    fetch(source, archive, sha256=sha256, hint=hint)
    extract_archive(archive, root, plain_file_name=source_file_name(source))
    layout_root = root / archive_root
    if not layout_root.is_dir():
        top = sorted(path.name + ("/" if path.is_dir() else "") for path in root.iterdir())
        raise DownloadError(
            f"The archive of {dataset} ({source}) unpacked into {root} has no folder "
            f"{archive_root!r}; its top level holds {top[:10]}. Set datasets.{dataset}."
            f"archive_root to the folder that holds {layout} ('' for the top level)."
        )
    logger.info("%s unpacked into %s; the adapter reads %s", dataset, root, layout_root)
    return layout_root


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    download(
        snakemake.wildcards.dataset,
        snakemake.params.source,
        snakemake.params.sha256,
        Path(snakemake.output.archive),
        Path(snakemake.output.root),
        archive_root=snakemake.params.archive_root,
        layout=snakemake.params.layout,
    )
