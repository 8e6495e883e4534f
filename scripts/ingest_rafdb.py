"""Read RAF-DB (official or Kaggle layout) into the manifest Parquet, with a valid split."""

import logging
from pathlib import Path

from fairfer.datasets import rafdb
from fairfer.datasets.checks import check_splits
from fairfer.datasets.splits import split_validation
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
    checks: dict | None = None,
) -> dict:
    manifest, report = rafdb.build_manifest(
        root,
        layout=settings["layout"],
        image_variant=settings["image_variant"],
        sample_per_split=settings.get("sample"),
        seed=seed,
    )
    manifest = split_validation(manifest, fraction=settings["valid_fraction"], seed=seed)
    checks = checks or {}
    manifest, report["checks"] = check_splits(
        manifest,
        dataset="rafdb",
        class_absent_from_train=checks.get("class_absent_from_train", "drop"),
        attributes=["race", "gender", "age"],
        min_group_size=checks.get("min_group_size", 30),
    )
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
        checks=snakemake.params.checks,
    )
