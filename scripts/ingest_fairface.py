"""Read the extracted FairFace images and the official label CSVs into the manifest Parquet."""

import json
import logging
from pathlib import Path

from fairfer import fairface
from fairfer.schemas import MANIFEST, write_parquet

logger = logging.getLogger(__name__)


def ingest(
    image_root: Path,
    label_paths: dict[str, Path],
    manifest_path: Path,
    report_path: Path,
    *,
    sample,
    seed: int,
) -> None:
    manifest, report = fairface.build_manifest(
        image_root, label_paths, sample_per_split=sample, seed=seed
    )
    manifest["image"] = [(image_root / rel).read_bytes() for rel in manifest["source_path"]]
    write_parquet(manifest, manifest_path, MANIFEST)
    report["rows"] = len(manifest)
    report["rows_by_split"] = manifest["split"].value_counts().to_dict()
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    logger.info("FairFace manifest: %s", report)


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    ingest(
        Path(snakemake.input.images),
        {split: Path(path) for split, path in snakemake.params.labels.items()},
        Path(snakemake.output.manifest),
        Path(snakemake.output.report),
        sample=snakemake.params.sample,
        seed=snakemake.params.seed,
    )
