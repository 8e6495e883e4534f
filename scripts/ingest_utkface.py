"""Read UTKFace (labels in the file names) into the manifest Parquet, as a test-only reference."""

import logging
from pathlib import Path

from fairfer.datasets import utkface
from fairfer.schemas import publish_manifest

logger = logging.getLogger(__name__)

#: UTKFace only evaluates the FairFace-trained classifiers here: every image is "test".
EVALUATION_ONLY = {"test": 1.0}


def ingest(
    root: Path,
    manifest_path: Path,
    report_path: Path,
    rejects_path: Path,
    *,
    image_glob: str,
    sample,
    seed: int,
) -> dict:
    manifest, report = utkface.build_manifest(
        root,
        image_glob=image_glob,
        fractions=EVALUATION_ONLY,
        seed=seed,
        sample_per_split=sample,
    )
    report = publish_manifest(
        manifest, root, manifest_path, report, report_path, rejects_path=rejects_path
    )
    logger.info("UTKFace manifest: %s", report)
    return report


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    ingest(
        Path(snakemake.params.root),
        Path(snakemake.output.manifest),
        Path(snakemake.output.report),
        Path(snakemake.output.rejects),
        image_glob=snakemake.params.image_glob,
        sample=snakemake.params.sample,
        seed=snakemake.params.seed,
    )
