"""Read a generic emotion dataset (CSV manifest or folder sets) into the manifest Parquet."""

import logging
from pathlib import Path

from fairfer import generic_manifest
from fairfer.rafdb import split_validation
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
    """Write the manifest of a ``generic`` dataset, as ``settings`` (its config entry) describe.

    Emotion names go through the built-in synonyms plus ``settings["emotion_aliases"]``. A
    dataset whose split column (or drawn split) gives no ``valid`` rows gets
    ``valid_fraction`` of train as validation, stratified by emotion, as RAF-DB does.
    """
    common = {
        "dataset": "generic",
        "emotion_aliases": {
            **generic_manifest.EMOTION_ALIASES,
            **(settings.get("emotion_aliases") or {}),
        },
        "fractions": settings["split_fractions"],
        "seed": seed,
        "sample_per_split": settings.get("sample"),
    }
    if settings["format"] == "csv":
        manifest, report = generic_manifest.build_manifest(
            root, manifest_csv=settings["manifest_csv"], **common
        )
    elif settings["format"] == "folder_sets":
        manifest, report = generic_manifest.from_folder_sets(
            root,
            settings["metadata_csv"],
            image_glob=settings["image_glob"],
            set_column=settings["set_column"],
            **common,
        )
    else:
        raise ValueError(f"generic format must be 'csv' or 'folder_sets': {settings['format']!r}")
    if manifest["emotion"].isna().all():
        raise ValueError(
            f"generic dataset at {root} has no emotion labels (no emotion column in "
            f"{settings['metadata_csv']}); an emotion dataset needs them"
        )
    report["valid_split_carved_from_train"] = int(not (manifest["split"] == "valid").any())
    if report["valid_split_carved_from_train"]:
        manifest = split_validation(manifest, fraction=settings["valid_fraction"], seed=seed)
    missing = {"train", "valid", "test"} - set(manifest["split"])
    if missing:
        raise ValueError(
            f"generic dataset at {root} has no {sorted(missing)} images; training needs train, "
            "valid and test splits (fill the split column, or drop it to draw splits with "
            "datasets.generic.split_fractions)"
        )
    report = publish_manifest(
        manifest, root, manifest_path, report, report_path, rejects_path=rejects_path
    )
    logger.info("generic manifest: %s", report)
    return report


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    ingest(
        Path(snakemake.params.root),
        Path(snakemake.output.manifest),
        Path(snakemake.output.report),
        Path(snakemake.output.rejects),
        settings=snakemake.params.generic,
        seed=snakemake.params.seed,
    )
