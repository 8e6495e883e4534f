"""Read FER+ (PNG layout + fer2013new.csv) into the manifest Parquet, image bytes included."""

import logging
from pathlib import Path

from fairfer import ferplus
from fairfer.schemas import publish_manifest

logger = logging.getLogger(__name__)


def ingest(
    root: Path,
    manifest_path: Path,
    report_path: Path,
    rejects_path: Path,
    *,
    sample,
    seed: int,
    vote_source: str,
) -> None:
    manifest, report = ferplus.build_manifest(
        root, sample_per_split=sample, seed=seed, vote_source=vote_source
    )
    report = publish_manifest(
        manifest, root, manifest_path, report, report_path, rejects_path=rejects_path
    )
    logger.info("FER+ manifest: %s", report)


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    ingest(
        Path(snakemake.input.root),
        Path(snakemake.output.manifest),
        Path(snakemake.output.report),
        Path(snakemake.output.rejects),
        sample=snakemake.params.sample,
        seed=snakemake.params.seed,
        vote_source=snakemake.params.vote_source,
    )
