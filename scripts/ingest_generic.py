"""Read a generic emotion dataset (CSV, folder sets or class folders) into the manifest Parquet."""

import logging
from pathlib import Path

from fairfer.datasets import generic
from fairfer.datasets.checks import check_splits
from fairfer.datasets.splits import split_validation
from fairfer.errors import DatasetError
from fairfer.schemas import EMOTIONS, publish_manifest

logger = logging.getLogger(__name__)


def ingest(
    root: Path,
    manifest_path: Path,
    report_path: Path,
    rejects_path: Path,
    *,
    settings: dict,
    seed: int,
    attributes: dict | None = None,
    checks: dict | None = None,
) -> dict:
    """Write the manifest of a ``generic`` dataset, as ``settings`` (its config entry) describe.

    Emotion names go through the built-in synonyms plus ``settings["emotion_aliases"]``. A
    dataset whose split column (or drawn split) gives no ``valid`` rows gets
    ``valid_fraction`` of train as validation, stratified by emotion, as RAF-DB does.
    ``attributes`` has ``extra`` (attributes beyond race, gender and age the run analyses),
    ``binning`` and ``value_aliases``; ``checks`` has ``class_absent_from_train`` and
    ``min_group_size`` (:func:`fairfer.datasets.checks.check_splits`).
    """
    attributes = attributes or {}
    checks = checks or {}
    extra = list(attributes.get("extra", []))
    labelled = {
        "extra_attributes": extra,
        "binning": attributes.get("binning") or {},
        "value_aliases": attributes.get("value_aliases") or {},
    }
    common = {
        "dataset": "generic",
        "emotion_vocabulary": tuple(settings.get("emotion_vocabulary") or EMOTIONS),
        "emotion_aliases": {
            **generic.EMOTION_ALIASES,
            **(settings.get("emotion_aliases") or {}),
        },
        "fractions": settings["split_fractions"],
        "seed": seed,
        "sample_per_split": settings.get("sample"),
    }
    if settings["format"] == "csv":
        manifest, report = generic.build_manifest(
            root, manifest_csv=settings["manifest_csv"], **common, **labelled
        )
    elif settings["format"] == "folder_sets":
        manifest, report = generic.from_folder_sets(
            root,
            settings["metadata_csv"],
            image_glob=settings["image_glob"],
            set_column=settings["set_column"],
            emotion_from=settings.get("emotion_from", "metadata"),
            **common,
            **labelled,
        )
    elif settings["format"] == "class_folders":
        if extra:
            raise DatasetError(
                f"config key fairness.attributes names {extra}, but datasets.generic.format "
                "class_folders has no attribute columns. Use format csv (one row per image) "
                "or folder_sets (one row per set) to give them, or remove them from the "
                "configuration."
            )
        manifest, report = generic.from_class_folders(
            root,
            split_level=settings.get("split_level", "auto"),
            subject_pattern=settings.get("subject_pattern"),
            **common,
        )
    else:
        raise DatasetError(
            f"config key datasets.generic.format is {settings['format']!r}; allowed: csv, "
            "folder_sets, class_folders."
        )
    if manifest["emotion"].isna().all():
        raise DatasetError(
            f"generic dataset at {root} has no emotion labels (no emotion column in "
            f"{settings['metadata_csv']}, and datasets.generic.emotion_from is not filename); "
            "an emotion dataset needs them"
        )
    report["valid_split_carved_from_train"] = int(not (manifest["split"] == "valid").any())
    if report["valid_split_carved_from_train"]:
        manifest = split_validation(manifest, fraction=settings["valid_fraction"], seed=seed)
    missing = {"train", "valid", "test"} - set(manifest["split"])
    if missing:
        raise DatasetError(
            f"generic dataset at {root} has no {sorted(missing)} images; training needs train, "
            "valid and test splits (fill the split column, or drop it to draw splits with "
            "datasets.generic.split_fractions)"
        )
    manifest, report["checks"] = check_splits(
        manifest,
        dataset="generic",
        class_absent_from_train=checks.get("class_absent_from_train", "drop"),
        attributes=["race", "gender", "age", *extra],
        min_group_size=checks.get("min_group_size", 30),
    )
    report = publish_manifest(
        manifest,
        root,
        manifest_path,
        report,
        report_path,
        rejects_path=rejects_path,
        extra_attributes=extra,
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
        attributes=snakemake.params.attributes,
        checks=snakemake.params.checks,
    )
