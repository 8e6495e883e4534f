"""Read FER+ (PNG layout + fer2013new.csv) into the manifest Parquet, image bytes included."""

import json
import logging
from pathlib import Path

import pandas as pd

from fairfer import ferplus
from fairfer.schemas import MANIFEST, write_parquet

logger = logging.getLogger(__name__)


def attach_image_bytes(manifest: pd.DataFrame, root: Path) -> pd.DataFrame:
    """Add each image's encoded bytes, read as stored (no re-encoding)."""
    manifest = manifest.copy()
    manifest["image"] = [(root / relative).read_bytes() for relative in manifest["source_path"]]
    return manifest


def ingest(
    root: Path, manifest_path: Path, report_path: Path, *, sample, seed: int, vote_source: str
) -> None:
    manifest, report = ferplus.build_manifest(
        root, sample_per_split=sample, seed=seed, vote_source=vote_source
    )
    manifest = attach_image_bytes(manifest, root)
    write_parquet(manifest, manifest_path, MANIFEST)
    report["rows"] = len(manifest)
    report["rows_by_split"] = manifest["split"].value_counts().to_dict()
    report["label_status"] = manifest["label_status"].value_counts().to_dict()
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    logger.info("FER+ manifest: %s", report)


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    ingest(
        Path(snakemake.input.root),
        Path(snakemake.output.manifest),
        Path(snakemake.output.report),
        sample=snakemake.params.sample,
        seed=snakemake.params.seed,
        vote_source=snakemake.params.vote_source,
    )
