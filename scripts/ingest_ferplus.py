"""Read FER+ (PNG folders or fer2013.csv, with fer2013new.csv) into the manifest Parquet."""

import logging
from pathlib import Path

from fairfer.datasets import fer2013, ferplus
from fairfer.datasets.checks import check_splits
from fairfer.schemas import publish_manifest

logger = logging.getLogger(__name__)


def ingest(
    root: Path,
    manifest_path: Path,
    report_path: Path,
    rejects_path: Path,
    *,
    layout: str,
    sample,
    seed: int,
    vote_source: str,
    votes_csv: Path | None = None,
    checks: dict | None = None,
) -> dict:
    """Write the FER+ manifest from either layout; both give the same ids, labels and votes.

    ``layout`` is ``png_folders`` (Microsoft's generate_training_data.py output) or
    ``fer2013_csv`` (the original fer2013.csv, images encoded here); ``votes_csv`` is
    fer2013new.csv when it is not in ``root``.
    """
    if layout == "png_folders":
        manifest, report = ferplus.build_manifest(
            root,
            sample_per_split=sample,
            seed=seed,
            vote_source=vote_source,
            labels_path=votes_csv,
        )
    elif layout == "fer2013_csv":
        manifest, report = fer2013.build_manifest(
            root, sample_per_split=sample, seed=seed, labels_path=votes_csv
        )
    else:
        raise ValueError(f"FER+ layout must be 'png_folders' or 'fer2013_csv', got {layout!r}")
    checks = checks or {}
    # FER+ has no demographic annotations: only its classes are checked here.
    manifest, report["checks"] = check_splits(
        manifest,
        dataset="ferplus",
        class_absent_from_train=checks.get("class_absent_from_train", "drop"),
        min_group_size=checks.get("min_group_size", 30),
    )
    report = publish_manifest(
        manifest,
        root,
        manifest_path,
        {"layout": layout, **report},
        report_path,
        rejects_path=rejects_path,
    )
    logger.info("FER+ manifest: %s", report)
    return report


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    ingest(
        Path(snakemake.params.root),
        Path(snakemake.output.manifest),
        Path(snakemake.output.report),
        Path(snakemake.output.rejects),
        layout=snakemake.params.layout,
        sample=snakemake.params.sample,
        seed=snakemake.params.seed,
        vote_source=snakemake.params.vote_source,
        votes_csv=Path(snakemake.params.votes_csv) if snakemake.params.votes_csv else None,
        checks=snakemake.params.checks,
    )
