"""Read RAF-DB (official or Kaggle layout) into the manifest Parquet, with a valid split."""

import logging
from pathlib import Path

from fairfer import rafdb
from fairfer.schemas import publish_manifest

logger = logging.getLogger(__name__)


def ingest(
    root: Path,
    manifest_path: Path,
    report_path: Path,
    rejects_path: Path,
    *,
    settings: dict,
    seed: int,
) -> dict:
    manifest, report = rafdb.build_manifest(
        root,
        layout=settings["layout"],
        image_variant=settings["image_variant"],
        sample_per_split=settings.get("sample"),
        seed=seed,
    )
    manifest = rafdb.split_validation(manifest, fraction=settings["valid_fraction"], seed=seed)
    report = publish_manifest(
        manifest, root, manifest_path, report, report_path, rejects_path=rejects_path
    )
    logger.info("RAF-DB manifest: %s", report)
    return report


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    ingest(
        Path(snakemake.params.root),
        Path(snakemake.output.manifest),
        Path(snakemake.output.report),
        Path(snakemake.output.rejects),
        settings=snakemake.params.rafdb,
        seed=snakemake.params.seed,
    )
