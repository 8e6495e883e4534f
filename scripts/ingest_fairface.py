"""Read the extracted FairFace images and the official label CSVs into the manifest Parquet."""

import logging
from pathlib import Path

from fairfer.datasets import fairface
from fairfer.schemas import publish_manifest

logger = logging.getLogger(__name__)


def ingest(
    image_root: Path,
    label_paths: dict[str, Path],
    manifest_path: Path,
    report_path: Path,
    rejects_path: Path,
    *,
    sample,
    seed: int,
) -> None:
    manifest, report = fairface.build_manifest(
        image_root, label_paths, sample_per_split=sample, seed=seed
    )
    report = publish_manifest(
        manifest, image_root, manifest_path, report, report_path, rejects_path=rejects_path
    )
    logger.info("FairFace manifest: %s", report)


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    ingest(
        Path(snakemake.input.images),
        {split: Path(path) for split, path in snakemake.params.labels.items()},
        Path(snakemake.output.manifest),
        Path(snakemake.output.report),
        Path(snakemake.output.rejects),
        sample=snakemake.params.sample,
        seed=snakemake.params.seed,
    )
