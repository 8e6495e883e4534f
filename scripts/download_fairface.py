"""Fetch the FairFace image archive (path, file://, http(s):// or kaggle://), verify, extract.

Either official archive works: fairface-img-margin025-trainval.zip (faces with a 25% margin)
or fairface-img-margin125-trainval.zip (125%); both hold train/<n>.jpg and val/<n>.jpg, which
the same label CSVs describe.
"""

import logging
from pathlib import Path

from fairfer.datasets.archives import extract_zip
from fairfer.datasets.download import fetch

logger = logging.getLogger(__name__)

HINT = (
    "Set config key datasets.fairface.archive.url to the official FairFace zip "
    "(fairface-img-margin025-trainval.zip or fairface-img-margin125-trainval.zip) and "
    "datasets.fairface.archive.sha256 to its hash."
)


def download(url: str, sha256: str | None, archive: Path, images: Path) -> None:
    fetch(url, archive, sha256=sha256, hint=HINT)
    extract_zip(archive, images, members_prefix=["train/", "val/"])
    logger.info("FairFace images extracted to %s", images)


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    download(
        snakemake.params.url,
        snakemake.params.sha256,
        Path(snakemake.output.archive),
        Path(snakemake.output.images),
    )
